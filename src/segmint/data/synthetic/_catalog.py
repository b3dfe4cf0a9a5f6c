"""The product catalogue: categories, brands, products and price-aware sampling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from segmint.data.synthetic import _text

#: Number of products in the catalogue (independent of the number of customers).
PRODUCTS = 2_000

#: (category, url slug, median list price in euro, popularity weight, nouns, brands)
CATEGORIES: tuple[tuple[str, str, float, float, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "Electronics",
        "electronics",
        180.0,
        0.10,
        ("Headphones", "Speaker", "Smartwatch", "Tablet", "Camera", "Monitor", "Keyboard"),
        ("Voltra", "Sonique", "Pixelon", "Auralis", "Nexon"),
    ),
    (
        "Home & Kitchen",
        "home-kitchen",
        55.0,
        0.12,
        ("Blender", "Pan Set", "Kettle", "Knife Block", "Coffee Maker", "Toaster", "Lamp"),
        ("Casaro", "Kuchenwerk", "Hearthly", "Domus", "Maison Bleu"),
    ),
    (
        "Fashion",
        "fashion",
        45.0,
        0.16,
        ("T-Shirt", "Jeans", "Sneakers", "Jacket", "Dress", "Sweater", "Scarf", "Boots"),
        ("Nordweave", "Urbano", "Linea", "Threadline", "Vela"),
    ),
    (
        "Beauty",
        "beauty",
        18.0,
        0.11,
        ("Face Cream", "Shampoo", "Lipstick", "Serum", "Perfume", "Body Lotion", "Mascara"),
        ("Lumiere", "Purelle", "Verdana Skin", "Glowra", "Aqualis"),
    ),
    (
        "Sports & Outdoors",
        "sports-outdoors",
        60.0,
        0.09,
        ("Yoga Mat", "Running Shoes", "Backpack", "Tent", "Water Bottle", "Bike Helmet"),
        ("Trailpeak", "Stridex", "Alpenrock", "Fitora", "Wavecrest"),
    ),
    (
        "Toys",
        "toys",
        25.0,
        0.07,
        ("Building Set", "Puzzle", "Plush Bear", "Board Game", "Toy Car", "Doll"),
        ("Playmora", "Bricko", "Tinytown", "Funwise", "Kiddo"),
    ),
    (
        "Books",
        "books",
        14.0,
        0.10,
        ("Novel", "Cookbook", "Travel Guide", "Biography", "Comic", "Atlas"),
        ("Pagewright", "Inkwell Press", "Folio", "Quillstone", "Booklane"),
    ),
    (
        "Grocery",
        "grocery",
        6.0,
        0.13,
        ("Coffee Beans", "Olive Oil", "Pasta", "Chocolate", "Green Tea", "Granola", "Honey"),
        ("Fattoria", "Kaffeehaus", "Golden Grove", "Terra Viva", "Mielo"),
    ),
    (
        "Garden",
        "garden",
        35.0,
        0.06,
        ("Plant Pot", "Garden Hose", "Pruning Shears", "Seed Kit", "Lawn Chair", "Lantern"),
        ("Greenfold", "Gartenglück", "Bloomery", "Verdura", "Hedgerow"),
    ),
    (
        "Pet Supplies",
        "pet-supplies",
        20.0,
        0.06,
        ("Dog Food", "Cat Litter", "Pet Bed", "Leash", "Scratching Post", "Chew Toy"),
        ("Pawsome", "Tierfreund", "Whiskerly", "Barkley", "Furrytail"),
    ),
)

_ADJECTIVES = (
    "Classic",
    "Premium",
    "Essential",
    "Pro",
    "Eco",
    "Compact",
    "Deluxe",
    "Everyday",
    "Smart",
    "Organic",
    "Lite",
    "Signature",
    "Urban",
    "Nordic",
    "Vintage",
    "Ultra",
)

SHOP_URL = "https://shop.example.com"


@dataclass(frozen=True)
class Catalog:
    """Products sorted by (category, price), with text fragments for events."""

    product_id: pa.StringArray
    name: pa.StringArray
    category: np.ndarray  # category index per product
    brand: pa.StringArray
    price_cents: np.ndarray
    category_start: np.ndarray  # first product of each category
    category_size: np.ndarray
    category_weight: np.ndarray
    category_names: pa.StringArray
    category_slugs: pa.StringArray
    json_fragment: pa.StringArray  # '"product_id":"P0001",...,"price":9.99,"url":"..."'

    def table(self) -> pa.Table:
        """The products file: product_id, name, category, brand, price."""
        return pa.table(
            {
                "product_id": self.product_id,
                "name": self.name,
                "category": _text.pick(self.category_names, self.category),
                "brand": self.brand,
                "price": pa.array(_text.money(self.price_cents)),
            }
        )

    def sample(
        self, rng: np.random.Generator, category: np.ndarray, quantile: np.ndarray
    ) -> np.ndarray:
        """Products of the given categories at the given price quantiles (0 cheap, 1 dear)."""
        size = self.category_size[category]
        within = np.clip((quantile * size).astype(np.int64), 0, size - 1)
        return self.category_start[category] + within


def build_catalog(rng: np.random.Generator) -> Catalog:
    """Draw the catalogue: :data:`PRODUCTS` products over the categories."""
    n_cat = len(CATEGORIES)
    per_category = np.full(n_cat, PRODUCTS // n_cat, dtype=np.int64)
    per_category[: PRODUCTS - per_category.sum()] += 1
    category = np.repeat(np.arange(n_cat), per_category)
    median = np.array([c[2] for c in CATEGORIES])[category]
    euros = median * np.exp(rng.normal(0.0, 0.55, PRODUCTS))
    price_cents = np.maximum(np.round(euros) * 100 - 1, 99).astype(np.int64)
    order = np.lexsort((price_cents, category))
    category, price_cents = category[order], price_cents[order]

    brand_idx = rng.integers(0, 5, PRODUCTS)
    adjective = rng.integers(0, len(_ADJECTIVES), PRODUCTS)
    noun_pick = rng.random(PRODUCTS)
    brands: list[str] = []
    names: list[str] = []
    # One pass over the fixed-size catalogue (not over customers or orders).
    for i in range(PRODUCTS):
        _, _, _, _, nouns, cat_brands = CATEGORIES[category[i]]
        brand = cat_brands[brand_idx[i]]
        noun = nouns[int(noun_pick[i] * len(nouns))]
        brands.append(brand)
        names.append(f"{brand} {_ADJECTIVES[adjective[i]]} {noun}")

    product_id = _text.padded_ids("P", np.arange(1, PRODUCTS + 1), 5)
    name = pa.array(names, pa.string())
    brand_arr = pa.array(brands, pa.string())
    category_names = pa.array([c[0] for c in CATEGORIES], pa.string())
    category_slugs = pa.array([c[1] for c in CATEGORIES], pa.string())
    fragment = _text.join(
        '"product_id":"',
        product_id,
        '","name":"',
        name,
        '","category":"',
        _text.pick(category_names, category),
        '","brand":"',
        brand_arr,
        '","price":',
        _text.number_strings(_text.money(price_cents)),
        ',"url":"' + SHOP_URL + "/p/",
        product_id,
        '"',
    )
    start = np.concatenate([[0], np.cumsum(per_category)[:-1]])
    weight = np.array([c[3] for c in CATEGORIES])
    return Catalog(
        product_id=product_id,
        name=name,
        category=category,
        brand=brand_arr,
        price_cents=price_cents,
        category_start=start,
        category_size=per_category,
        category_weight=weight / weight.sum(),
        category_names=category_names,
        category_slugs=category_slugs,
        json_fragment=fragment,
    )
