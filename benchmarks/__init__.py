"""`make bench`: Herald's fan-out measured against the naive Channels design."""
