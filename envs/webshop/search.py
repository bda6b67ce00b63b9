"""The shop's search engine: BM25 over WebShop's indexed text of each product, with the tantivy
machinery of the search env (:class:`agentenv.envs.search.server.BM25Index`), no Java.

WebShop (Yao et al. 2022, arXiv 2207.01206; ``search_engine/convert_product_file_format.py``)
indexes one field per product, ``contents`` = the lower-cased ``Title + Description +
BulletPoints[0] + option text`` (``"color: black, navy, and size: small, large"``), and asks
pyserini's Lucene BM25 for the top :data:`SEARCH_RETURN_N` ASINs. :func:`product_contents` builds
the same text; it is indexed as the body of a :class:`BM25Index` document with an empty title
line, so no field is boosted (tantivy's ``en_stem`` tokenizer stands in for Anserini's Porter
analyzer). WebShop's special query prefixes (``<r>``, ``<a>``, ``<c>``, ``<q>``) are not
supported: they are plain words here.

The index is cached on disk per catalogue, under ``{cache_dir}/search/webshop-{digest}-v…``
(:func:`catalog_digest`), like the search env's; a later start opens it in milliseconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from agentenv.cache import cache_root
from agentenv.envs.search.server import BM25Index
from agentenv.envs.search.tasks import Doc
from agentenv.envs.webshop.products import Product

SEARCH_RETURN_N = 50
"""Hits per search (WebShop's ``SEARCH_RETURN_N``)."""
INDEX_KEY_VERSION = 1
"""Bumped when :func:`product_contents` changes, so old cached indexes are not reused."""


def option_text(product: Product) -> str:
    """``"<name>: v1, v2, and <name2>: w1, w2"``: WebShop's indexed option text."""
    return ", and ".join(f"{name}: {', '.join(values)}" for name, values in product.options.items())


def product_contents(product: Product) -> str:
    """WebShop's indexed text: lower-cased title, description, first bullet and option text,
    joined by spaces."""
    first_bullet = product.bullet_points[0] if product.bullet_points else ""
    parts = (product.title, product.description, first_bullet, option_text(product))
    return " ".join(parts).lower()


def catalog_digest(products: Iterable[Product]) -> str:
    """sha256 over the products' reprs, in order: equal catalogues share one cached index."""
    digest = hashlib.sha256(f"webshop-index-{INDEX_KEY_VERSION}".encode())
    for product in products:
        digest.update(repr(product).encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
    return digest.hexdigest()


def _documents(products: Sequence[Product]) -> Iterator[Doc]:
    for product in products:
        yield Doc(product.asin, "\n" + product_contents(product))


class ProductIndex:
    """A catalogue and its BM25 index: ``search(keywords)`` → ASINs, ``product(asin)``.

    Read-only after construction, so one instance serves every session of a service.
    """

    def __init__(self, products: Sequence[Product], cache_dir: str | Path | None = None) -> None:
        self.products: dict[str, Product] = {}
        for product in products:
            self.products.setdefault(product.asin, product)  # WebShop skips duplicate ASINs
        self.digest = catalog_digest(self.products.values())
        catalogue = list(self.products.values())
        self.index = BM25Index.open_or_build(
            lambda: _documents(catalogue),
            f"webshop-{self.digest}",
            cache_root(cache_dir),
            source="webshop catalogue",
        )

    def __len__(self) -> int:
        return len(self.products)

    def product(self, asin: str) -> Product | None:
        """The product of ``asin`` (upper case), or None."""
        return self.products.get(asin)

    def search(self, keywords: str, n: int = SEARCH_RETURN_N) -> list[str]:
        """The ASINs of the ``n`` best products for ``keywords`` by BM25, best first."""
        return [doc["id"] for doc, _ in self.index.search(keywords, n)]
