"""Fly regions the stand-in knows, and how far apart they are.

"Nearest" (the proxy's choice of Machine, `top<N>.nearest.of`) is great-circle
distance between region cities: close enough to Fly's RTT-based choice.
"""
from __future__ import annotations

import math

CITIES = {
    "ams": (52.37, 4.90), "arn": (59.65, 17.92), "atl": (33.64, -84.43), "bog": (4.70, -74.15),
    "bom": (19.09, 72.87), "bos": (42.36, -71.01), "cdg": (49.01, 2.55), "den": (39.86, -104.67),
    "dfw": (32.90, -97.04), "ewr": (40.69, -74.17), "eze": (-34.82, -58.54), "fra": (50.03, 8.57),
    "gdl": (20.52, -103.31), "gig": (-22.81, -43.25), "gru": (-23.43, -46.47), "hkg": (22.31, 113.91),
    "iad": (38.94, -77.46), "jnb": (-26.13, 28.24), "lax": (33.94, -118.41), "lhr": (51.47, -0.45),
    "mad": (40.49, -3.57), "mia": (25.79, -80.29), "nrt": (35.76, 140.39), "ord": (41.97, -87.91),
    "otp": (44.57, 26.10), "phx": (33.43, -112.01), "qro": (20.62, -100.19), "scl": (-33.39, -70.79),
    "sea": (47.45, -122.31), "sin": (1.36, 103.99), "sjc": (37.36, -121.93), "syd": (-33.95, 151.18),
    "waw": (52.17, 20.97), "yul": (45.47, -73.74), "yyz": (43.68, -79.63),
}


def known(region: str) -> bool:
    return region in CITIES


def distance(a: str | None, b: str) -> float:
    """Kilometres between two regions' cities; 0 for the same region."""
    if a is None or a == b or a not in CITIES or b not in CITIES:
        return 0.0 if a == b else 1e6
    (lat1, lon1), (lat2, lon2) = (map(math.radians, CITIES[r]) for r in (a, b))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 12742 * math.asin(math.sqrt(h))
