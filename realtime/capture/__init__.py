"""Change capture in the database: generated triggers append the change log row.

Every INSERT, UPDATE and DELETE on a tracked table, whatever issued it (the
ORM, `update()`, `bulk_create()`, raw SQL, another program), writes its
`realtime_liveupdate` row in the writer's own transaction: a rollback leaves
no row. See README, "Capturing changes".
"""
