from decimal import Decimal

from django.db import models


class Article(models.Model):
    tenant = models.ForeignKey("realtime.Tenant", on_delete=models.CASCADE)
    site_id = models.IntegerField()
    title = models.CharField(max_length=200)
    published = models.BooleanField(default=False)
    price = models.DecimalField(max_digits=8, decimal_places=2, default=Decimal("0"))
    tags = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.title
