"""Writes to the suite's tracked model by every path capture must see."""

from __future__ import annotations

import shutil
import subprocess

from django.db import connection

from tests.conftest import current_database_url
from tests.tracked.models import Article

# (type, title) of the changes `every_write_path` makes, in order.
EVERY_WRITE_PATH = [
    ("INSERT", "saved"),
    ("UPDATE", "updated"),
    ("INSERT", "bulk"),
    ("UPDATE", "bulk updated"),
    ("UPDATE", "updated"),
    ("UPDATE", "bulk updated"),
    ("DELETE", "updated"),
    ("DELETE", "bulk updated"),
]


def psql(*statements: str) -> None:
    """Run statements with psql, another program on the test database."""
    binary = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    subprocess.run(
        [binary, current_database_url(), "-v", "ON_ERROR_STOP=1"]
        + [arg for s in statements for arg in ("-c", s)],
        check=True,
        capture_output=True,
    )


def every_write_path(tenant) -> None:
    """save, update(), bulk_create(), bulk_update(), raw SQL, psql, delete()."""
    a = Article.objects.create(tenant=tenant, site_id=1, title="saved")
    Article.objects.filter(pk=a.pk).update(title="updated")
    [b] = Article.objects.bulk_create([Article(tenant=tenant, site_id=1, title="bulk")])
    b.title = "bulk updated"
    Article.objects.bulk_update([b], ["title"])
    with connection.cursor() as cursor:
        cursor.execute("UPDATE tracked_article SET site_id = 2 WHERE id = %s", [a.pk])
    psql(f"UPDATE tracked_article SET published = true WHERE id = {b.pk}")
    Article.objects.all().delete()
