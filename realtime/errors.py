"""Herald's error classes: a stable `code`, an HTTP status, Supabase's text.

REST answers `{"error": code, "message": message}` with `status_code`; the
socket uses `reason` (Supabase's "Code: message" join-error form).
"""


class HeraldError(Exception):
    status_code = 400
    code = "bad_request"
    reason_code = "UnknownError"
    default_message = "Bad request"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    @property
    def reason(self) -> str:
        return f"{self.reason_code}: {self.message}"


class AuthError(HeraldError):
    status_code = 401
    code = "unauthorized"
    reason_code = "Unauthorized"
    default_message = "Unauthorized"


class MissingKey(AuthError):
    code = "missing_api_key"
    default_message = "API key is missing"


class InvalidKey(AuthError):
    code = "invalid_api_key"
    default_message = "Invalid API key"


class TenantNotFound(AuthError):
    code = "tenant_not_found"
    reason_code = "TenantNotFound"
    default_message = "Tenant not found"


class TokenExpired(AuthError):
    code = "token_expired"
    reason_code = "InvalidJWTToken"
    default_message = "Token has expired"


class TokenClaimsMissing(AuthError):
    code = "token_claims_missing"
    reason_code = "InvalidJWTToken"
    default_message = "Fields `role` and `exp` are required in JWT"


class MalformedToken(AuthError):
    code = "malformed_token"
    reason_code = "MalformedJWT"
    default_message = "The token provided is not a valid JWT"


class TokenSignatureError(AuthError):
    code = "invalid_token_signature"
    reason_code = "JwtSignatureError"
    default_message = "Failed to validate JWT signature"


class TokenClaimInvalid(AuthError):
    """A claim a trusted issuer's token must satisfy (nbf, aud, iss, role)."""

    code = "token_claim_invalid"
    reason_code = "InvalidJWTToken"
    default_message = "A claim of the token is not accepted"


class IssuerKeysUnavailable(AuthError):
    """The issuer's JWKS could not be fetched: no token of it gets through."""

    code = "issuer_keys_unavailable"
    reason_code = "JwtSignerError"
    default_message = "Failed to generate JWT signer: the issuer's keys are unavailable"


class MissingOperatorToken(AuthError):
    code = "missing_operator_token"
    default_message = "The tenant API needs `Authorization: Bearer <operator token>`"


class InvalidOperatorToken(AuthError):
    code = "invalid_operator_token"
    default_message = "Invalid operator token"


class TenantSuspended(HeraldError):
    status_code = 403
    code = "tenant_suspended"
    reason_code = "RealtimeDisabledForTenant"
    default_message = "Realtime was disabled for this tenant"


class Forbidden(HeraldError):
    status_code = 403
    code = "forbidden"
    reason_code = "Unauthorized"
    default_message = "This key or token may not do that"


class OperatorOnly(Forbidden):
    code = "operator_only"
    default_message = (
        "The tenant API takes the operator token, never a tenant's key or token"
    )


class InvalidInput(HeraldError):
    status_code = 400
    code = "invalid"
    default_message = "Invalid input"


class PayloadTooLarge(HeraldError):
    status_code = 413
    code = "payload_too_large"
    default_message = "Payload too large"


class ServiceUnavailable(HeraldError):
    status_code = 503
    code = "unavailable"
    default_message = "Service unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    reason_code = "UnableToConnectToProject"
    default_message = "Realtime was unable to connect to the project database"


class LayerUnavailable(ServiceUnavailable):
    """Redis (the channel layer, presence) failed: a join cannot be made."""

    code = "layer_unavailable"
    reason_code = "RealtimeNodeDisconnected"
    default_message = "Realtime could not reach its other nodes; join again shortly"


class NotFound(HeraldError):
    status_code = 404
    code = "not_found"
    default_message = "Not found"


class Conflict(HeraldError):
    status_code = 409
    code = "conflict"
    default_message = "The request conflicts with the resource's state"


class CursorGone(HeraldError):
    status_code = 410
    code = "cursor_gone"
    default_message = (
        "Changes after this cursor were deleted by retention: reload the data, "
        "then continue from the cursor of the latest change"
    )


class InvalidJoinPayload(HeraldError):
    """A join whose topic or config is past a bound (realtime.bounds)."""

    code = "invalid_join_payload"
    reason_code = "InvalidJoinPayload"
    default_message = "The join payload is invalid"
