"""Each supported layout, written in its exact on-disk format, prepared by the real pipeline."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.data.beam_prepare import run_prepare
from recsys.data.catalog import ML100K_GENRES, layout_source
from recsys.data.config import FilterConfig, PrepareConfig
from recsys.data.prepared import PreparedDataset
from recsys.data.sources import load_source_yaml

pytestmark = pytest.mark.integration
LENIENT = PrepareConfig(filter=FilterConfig(min_item_interactions=1))
EVENTS = [(u, i, 1 + (u * i) % 5, 978_300_000 + 60 * (u * 10 + i)) for u in (1, 2, 3) for i in (1, 2, 3, 4)]


def _prepare(source, tmp_path: Path) -> PreparedDataset:
    run_prepare(source, tmp_path / "out", LENIENT)
    return PreparedDataset.open(tmp_path / "out")


def _item(prepared: PreparedDataset, item_id: str) -> dict:
    return prepared.items.set_index("item_id").loc[item_id].to_dict()


def test_grouplens_1m_layout_reads_dat_files_with_latin1_metadata(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("\n".join(f"{u}::{i}::{r}::{t}" for u, i, r, t in EVENTS) + "\n")
    (folder / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Amélie (2001)::Comedy|Romance\n"
        "3::City of Lost Children, The (Cité des enfants perdus, La) (1995)::Adventure|Sci-Fi\n"
        "4::Heat (1995)::Action|Crime|Thriller\n".encode("latin-1")
    )
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    prepared = _prepare(layout_source("ml-1m", "grouplens", folder), tmp_path)
    assert (prepared.num_users, prepared.num_items, prepared.manifest["interactions"]) == (3, 4, 12)
    amelie = _item(prepared, "2")
    assert (amelie["title"], amelie["year"], list(amelie["genres"])) == (
        "Amélie",
        2001,
        ["Comedy", "Romance"],
    )
    assert _item(prepared, "3")["title"] == "City of Lost Children, The (Cité des enfants perdus, La)"
    user = prepared.users.set_index("user_id").loc["1"]
    assert (user["gender"], user["age"], user["occupation"]) == ("F", "1", "10")


def test_grouplens_100k_layout_reads_genre_flag_columns(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("\n".join(f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in EVENTS) + "\n")
    flags = {1: {"Animation", "Children's", "Comedy"}, 2: {"Action"}, 3: {"Drama"}, 4: {"Film-Noir", "Crime"}}
    lines = [
        f"{i}|Movie {i} (199{i})|01-Jan-199{i}||http://x|"
        + "|".join("1" if g in flags[i] else "0" for g in ML100K_GENRES)
        for i in flags
    ]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n")
    prepared = _prepare(layout_source("ml-100k", "grouplens", folder), tmp_path)
    toy = _item(prepared, "1")
    assert (toy["title"], toy["year"]) == ("Movie 1", 1991)
    assert sorted(toy["genres"]) == ["Animation", "Children's", "Comedy"]
    assert prepared.users.set_index("user_id").loc["2", "occupation"] == "other"


def test_recbole_atomic_layout_keys_items_by_title_when_the_file_does(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    titles = {1: "Toy Story (1995)", 2: "Jumanji (1995)", 3: "Heat (1995)", 4: "Casino (1995)"}
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"1m_{u}\t{titles[i]}\t{r}\t{t}" for u, i, r, t in EVENTS]
    (folder / "ml-1m.inter").write_text("\n".join(inter) + "\n")
    items = ["item_id:token\tmovie_title:token\trelease_year:float\tgenre:token"]
    items += [f"{t}\t{t[:-7]}\t1995\tComedy Drama" for t in titles.values()]
    (folder / "ml-1m.item").write_text("\n".join(items) + "\n")
    users = ["user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token"]
    users += [f"1m_{u}\t25\tM\t4\t0000{u}" for u in (1, 2, 3)]
    (folder / "ml-1m.user").write_text("\n".join(users) + "\n")
    prepared = _prepare(layout_source("ml-1m", "recbole", folder), tmp_path)
    heat = _item(prepared, "Heat (1995)")
    assert (heat["title"], heat["year"], list(heat["genres"])) == ("Heat", 1995, ["Comedy", "Drama"])
    assert sorted(prepared.users["user_id"]) == ["1m_1", "1m_2", "1m_3"]
    assert prepared.users.set_index("user_id").loc["1m_3", "zip_code"] == "00003"


def test_any_parquet_with_a_yaml_column_mapping(tmp_path):
    table = pa.table(
        {
            "customer": [str(u) for u, *_ in EVENTS],
            "sku": [f"sku-{i}" for _, i, *_ in EVENTS],
            "stars": [float(r) for *_, r, _ in EVENTS],
            "when": [t for *_, t in EVENTS],
        }
    )
    pq.write_table(table, tmp_path / "events.parquet")
    (tmp_path / "products.csv").write_text(
        "sku,name,category\n" + "\n".join(f'sku-{i},"Thing, no. {i}",Tools|Garden' for i in range(1, 5)) + "\n"
    )
    (tmp_path / "shop.yaml").write_text(
        "name: shop\n"
        "interactions:\n"
        "  paths: [events.parquet]\n"
        "  format: parquet\n"
        "  columns: {user: customer, item: sku, rating: stars, timestamp: when}\n"
        "  rating_range: [1, 5]\n"
        "items:\n"
        "  path: products.csv\n"
        "  columns: {id: sku, title: name, genres: category}\n"
    )
    prepared = _prepare(load_source_yaml(tmp_path / "shop.yaml"), tmp_path)
    assert prepared.manifest["interactions"] == 12
    thing = _item(prepared, "sku-2")
    assert (thing["title"], list(thing["genres"])) == ("Thing, no. 2", ["Tools", "Garden"])
