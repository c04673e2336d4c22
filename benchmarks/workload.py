"""The workload both clients get: the event, its properties, the flag definitions, the people.

Everything here is plain data built before timing starts, identical for both clients. The sink
serves `flag_definitions()` to both clients' pollers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = [
    "BURST",
    "EVENT",
    "FLAG_KEYS",
    "FLUSH_AT",
    "PERSONAL_API_KEY",
    "flag_definitions",
    "make_properties",
    "person_properties",
    "workload",
]

EVENT = "checkout completed"
FLUSH_AT = 100
BURST = 1000  # captures between two (untimed) flushes, so no queue ever fills during timing
FLAG_KEYS = ("new-checkout", "pricing-experiment")
PERSONAL_API_KEY = "phx_benchmark_personal_key"


def make_properties(i: int) -> dict[str, Any]:
    """A realistic event body: 10 properties, a nested dict, a list of dicts, a datetime."""
    return {
        "plan": ("free", "pro", "enterprise")[i % 3],
        "amount": 49.99 + (i % 7),
        "quantity": 1 + i % 5,
        "is_trial": i % 2 == 0,
        "$current_url": f"https://shop.example.com/checkout/{i % 50}",
        "tags": ["summer-sale", "returning", f"cohort-{i % 4}"],
        "items": [
            {"sku": f"SKU-{i % 97}", "price": 19.99, "qty": 1},
            {"sku": f"SKU-{i % 89}", "price": 30.0, "qty": 2},
        ],
        "customer": {"email": f"user{i % 1000}@example.com", "org": {"id": i % 300, "tier": "b"}},
        "signed_up_at": datetime(2024, 1, 1 + i % 28, 12, 30, 5, tzinfo=UTC),
        "referrer": "https://www.google.com/",
    }


def workload(n: int = 1000) -> list[tuple[str, dict[str, Any]]]:
    """`n` (distinct_id, properties) pairs, built before timing starts and cycled through."""
    return [(f"user-{i}", make_properties(i)) for i in range(n)]


def flag_definitions() -> dict[str, Any]:
    """Two local-evaluation flags: a property-gated boolean rollout and a multivariate test."""
    return {
        "flags": [
            {
                "id": 1,
                "key": FLAG_KEYS[0],
                "name": "new checkout",
                "active": True,
                "ensure_experience_continuity": False,
                "filters": {
                    "groups": [
                        {
                            "properties": [
                                {
                                    "key": "email",
                                    "value": "@example.com",
                                    "operator": "icontains",
                                    "type": "person",
                                }
                            ],
                            "rollout_percentage": 50,
                        },
                        {"properties": [], "rollout_percentage": 10},
                    ],
                    "payloads": {"true": '{"color": "blue"}'},
                },
            },
            {
                "id": 2,
                "key": FLAG_KEYS[1],
                "name": "pricing experiment",
                "active": True,
                "ensure_experience_continuity": False,
                "filters": {
                    "groups": [
                        {
                            "properties": [
                                {
                                    "key": "plan",
                                    "value": ["pro", "enterprise"],
                                    "operator": "exact",
                                    "type": "person",
                                },
                                {
                                    "key": "country",
                                    "value": "DE",
                                    "operator": "is_not",
                                    "type": "person",
                                },
                            ],
                            "rollout_percentage": 100,
                        }
                    ],
                    "multivariate": {
                        "variants": [
                            {"key": "control", "rollout_percentage": 50},
                            {"key": "cheaper", "rollout_percentage": 25},
                            {"key": "pricier", "rollout_percentage": 25},
                        ]
                    },
                    "payloads": {"cheaper": '{"discount": 10}'},
                },
            },
        ],
        "group_type_mapping": {},
        "cohorts": {},
    }


def person_properties(i: int) -> dict[str, Any]:
    """Person properties that make both flags decidable locally, with varied outcomes."""
    return {
        "email": f"user{i}@" + ("example.com" if i % 3 else "other.org"),
        "plan": ("free", "pro", "enterprise")[i % 3],
        "country": ("DE", "FR", "US", "GB")[i % 4],
    }
