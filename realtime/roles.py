"""Role names Herald itself gives meaning to (pure: no Django)."""

# The role that bypasses row and channel policies: a tenant's secret key, or
# a token whose role claim says so. Every check compares against this one name.
SERVICE_ROLE = "service_role"
