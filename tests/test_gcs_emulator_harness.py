"""The GCS emulator harness: what it changes in gcp-storage-emulator, tested over real HTTP."""

from __future__ import annotations

import json
import urllib.parse

import pytest
import urllib3

from vertex_patterns.emulators.gcs import GcsEmulator, parse_fields
from vertex_patterns.storage import Storage


class TestParseFields:
    """`fields` selectors of the listing form parse; any other form gives None (all fields)."""

    @pytest.mark.parametrize(("spec", "expected"), [
        ("items(name,size),nextPageToken",
         {"items": frozenset({"name", "size"}), "nextPageToken": None}),
        ("nextPageToken", {"nextPageToken": None}),
        ("prefixes, items(name)", {"prefixes": None, "items": frozenset({"name"})}),
    ])
    def test_listing_forms(self, spec: str, expected: dict[str, frozenset[str] | None]) -> None:
        assert parse_fields(spec) == expected

    @pytest.mark.parametrize("spec", ["", "items(a/b)", "items(a(b))", "items(a)x", "items()",
                                      "items(a", "a)", "kind/x"])
    def test_other_forms(self, spec: str) -> None:
        assert parse_fields(spec) is None


class TestListingFields:
    """Object listings honour `fields` as GCS does: only the keys asked for come back."""

    def test_fields_select_keys(self, gcs_emulator: GcsEmulator, store: Storage,
                                make_bucket) -> None:
        bucket = make_bucket("fields")
        for i in range(3):
            store.write_bytes(f"gs://{bucket}/p/o{i}", b"x" * (i + 1))
        http = urllib3.PoolManager()

        def listing(fields: str | None) -> dict:
            query = {"prefix": "p/"} | ({"fields": fields} if fields else {})
            url = (f"{gcs_emulator.url}/storage/v1/b/{bucket}/o?"
                   f"{urllib.parse.urlencode(query)}")
            answer = http.request("GET", url)
            assert answer.status == 200
            return json.loads(answer.data)

        full = listing(None)
        assert len(full["items"]) == 3 and "selfLink" in full["items"][0]
        small = listing("items(name,size,crc32c),nextPageToken")
        assert set(small) == {"items"}  # no page token: everything fit in one page
        assert [set(i) for i in small["items"]] == [{"name", "size", "crc32c"}] * 3
        assert [i["name"] for i in small["items"]] == [i["name"] for i in full["items"]]
        assert listing("items(a/b)") == full  # a form not understood: the whole answer
        # Through the client library, as the storage layer lists.
        assert [o.size for o in store.list(f"gs://{bucket}/p")] == [1, 2, 3]
