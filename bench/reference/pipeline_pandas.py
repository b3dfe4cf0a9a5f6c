"""Reference pipeline written plainly with pandas and scikit-learn.

The same steps as ``segmint run`` on the same files: read, validate and deduplicate,
features (RFM, sessions by 30-minute inactivity, engagement), log1p + z scaling, choice of
k by silhouette on a bounded sample, k-means, bootstrap stability, scoring of everyone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.preprocessing import StandardScaler

from segmint.memory import peak_rss_mb, reset_peak_rss

FEATURES = [
    "recency_days",
    "frequency",
    "monetary",
    "avg_order_value",
    "discount_share",
    "sessions",
    "product_views",
    "cart_adds",
    "days_since_last_visit",
    "tenure_days",
]


def run(data: Path, sample_size: int = 200_000, seed: int = 0) -> dict[str, Any]:
    # Instrumentation only: time and peak memory per stage, like segmint's run reports.
    stages: dict[str, dict[str, float | None]] = {}
    reset_peak_rss()
    t = time.perf_counter()
    customers = pd.read_parquet(data / "customers.parquet")
    customers = customers.dropna(subset=["customer_id"]).drop_duplicates("customer_id", keep="last")
    orders = pd.read_parquet(data / "orders.parquet")
    orders["ordered_at"] = pd.to_datetime(orders["ordered_at"], errors="coerce", utc=True)
    orders["ordered_at"] = orders["ordered_at"].dt.tz_localize(None)
    orders["amount"] = pd.to_numeric(orders["amount"], errors="coerce")
    orders = orders[(orders["amount"] >= 0) & orders["ordered_at"].notna()]
    orders = orders.drop_duplicates("order_id")
    events = pd.read_parquet(
        data / "events.parquet", columns=["messageId", "type", "event", "userId", "timestamp"]
    )
    events["timestamp"] = pd.to_datetime(events["timestamp"], errors="coerce", utc=True)
    events["timestamp"] = events["timestamp"].dt.tz_localize(None)
    events = events.dropna(subset=["timestamp", "userId"]).drop_duplicates("messageId")
    stages["ingest"] = {"seconds": time.perf_counter() - t, "peak_mb": peak_rss_mb()}

    reset_peak_rss()
    t = time.perf_counter()
    as_of = orders["ordered_at"].max()
    done = orders[orders["status"].fillna("completed").str.lower() == "completed"]
    rfm = done.groupby("customer_id").agg(
        last=("ordered_at", "max"),
        frequency=("order_id", "size"),
        monetary=("amount", "sum"),
        discount=("discount", "sum"),
    )
    rfm["recency_days"] = (as_of - rfm["last"]).dt.total_seconds() / 86400
    rfm["avg_order_value"] = rfm["monetary"] / rfm["frequency"]
    rfm["discount_share"] = rfm["discount"] / (rfm["monetary"] + rfm["discount"])
    ev = events.sort_values(["userId", "timestamp"])
    gap = ev.groupby("userId")["timestamp"].diff().dt.total_seconds()
    ev["new_session"] = gap.isna() | (gap > 1800)
    eng = ev.groupby("userId").agg(
        sessions=("new_session", "sum"),
        last_visit=("timestamp", "max"),
        product_views=("event", lambda s: (s == "Product Viewed").sum()),
        cart_adds=("event", lambda s: (s == "Product Added").sum()),
    )
    eng["days_since_last_visit"] = (as_of - eng["last_visit"]).dt.total_seconds() / 86400
    feats = customers.set_index("customer_id")[["signup_at"]].join(rfm).join(eng)
    signup = pd.to_datetime(feats["signup_at"], errors="coerce", utc=True).dt.tz_localize(None)
    feats["tenure_days"] = (as_of - signup).dt.total_seconds() / 86400
    feats[["frequency", "monetary", "sessions", "product_views", "cart_adds"]] = feats[
        ["frequency", "monetary", "sessions", "product_views", "cart_adds"]
    ].fillna(0)
    for column in ("recency_days", "days_since_last_visit"):
        feats[column] = feats[column].fillna(feats[column].max())
    X_all = feats[FEATURES].astype(float)
    X_all = X_all.fillna(X_all.median())
    stages["features"] = {"seconds": time.perf_counter() - t, "peak_mb": peak_rss_mb()}

    reset_peak_rss()
    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(X_all), size=min(len(X_all), sample_size), replace=False)
    scaler = StandardScaler().fit(np.log1p(X_all.iloc[rows].clip(lower=0)))
    X = scaler.transform(np.log1p(X_all.iloc[rows].clip(lower=0)))
    small = X[rng.choice(len(X), size=min(len(X), 20_000), replace=False)]
    scores = {}
    for k in range(2, 11):
        labels = KMeans(k, n_init=10, random_state=seed).fit_predict(small)
        scores[k] = silhouette_score(small, labels, sample_size=5_000, random_state=seed)
    k = max(scores, key=scores.get)
    model = KMeans(k, n_init=10, random_state=seed).fit(X)
    stages["fit"] = {"seconds": time.perf_counter() - t, "peak_mb": peak_rss_mb()}

    reset_peak_rss()
    t = time.perf_counter()
    base = X[rng.choice(len(X), size=min(len(X), 5_000), replace=False)]
    base_labels = model.predict(base)
    aris = []
    for _ in range(20):
        boot = base[rng.integers(0, len(base), len(base))]
        aris.append(
            adjusted_rand_score(
                base_labels, KMeans(k, n_init=10, random_state=seed).fit(boot).predict(base)
            )
        )
    stages["validate"] = {"seconds": time.perf_counter() - t, "peak_mb": peak_rss_mb()}

    reset_peak_rss()
    t = time.perf_counter()
    everyone = scaler.transform(np.log1p(X_all.clip(lower=0)))
    out = pd.DataFrame({"customer_id": X_all.index, "segment": model.predict(everyone)})
    out.to_parquet(data.parent / "reference_assignments.parquet")
    stages["score"] = {"seconds": time.perf_counter() - t, "peak_mb": peak_rss_mb()}
    return {"stages": stages, "k": int(k)}
