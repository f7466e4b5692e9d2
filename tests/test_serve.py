"""Web viewer: upload DICOM / PNG, results at the input's size, identity of the outputs, 400 on bad input, LRU;
novel views of an XraySyn result (view.png)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cxrdecomp import checkpoint
from cxrdecomp.decomposer import Decomposer
from cxrdecomp.methods.bone_unet.network import build as build_bone_unet

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("multipart", reason="python-multipart is needed for uploads")
with warnings.catch_warnings():  # starlette: "Using httpx with starlette.testclient is deprecated"
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from cxrdecomp.serve.web import ResultStore, create_app  # noqa: E402
from serve_helpers import ramp_png, synthetic_cr, tiny_xraysyn  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::cxrdecomp.io.radiograph.RadiographWarning"),
    pytest.mark.filterwarnings("ignore:.*unlikely to represent the intended person name"),
]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    cfg = {"method": "bone_unet", "model": {"base": 4, "depth": 2}, "input_size": 64}
    return checkpoint.save(folder, build_bone_unet(base=4, depth=2), cfg, "tiny random test model")


@pytest.fixture()
def client(tiny_ckpt, tmp_path):
    loads = []

    def factory(method):
        loads.append(method)
        return Decomposer.from_pretrained(tiny_ckpt, device="cpu")

    app = create_app(factory, {"bone": str(tiny_ckpt)}, results_dir=tmp_path / "results", max_results=3)
    with TestClient(app) as c:
        c.loads = loads
        yield c


def _png(client, url) -> np.ndarray:
    r = client.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(r.content)))


def test_upload_dicom_results_full_size(client):
    data = synthetic_cr((128, 96))
    r = client.post("/api/decompose", files={"file": ("chest.dcm", data, "application/dicom")}, params={"w": 1.5})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["shape"] == [128, 96] and j["method"] == "bone" and j["options"] == {"w": 1.5, "w_s": 1.0}
    lo, hi = j["bone_range"]
    assert lo <= 0 < hi
    shown = {name: _png(client, url) for name, url in j["images"].items()}
    assert set(shown) == {"input", "bone", "soft_tissue", "enhanced"}
    for a in shown.values():
        assert a.shape == (128, 96) and a.dtype == np.uint8
    # the 8-bit display images obey the decomposition identity (to 8-bit rounding, away from clipping)
    x, b = shown["input"].astype(float), lo * 255 + shown["bone"].astype(float) * (hi - lo)
    enh = np.clip(x + 1.5 * b, 0, 255)
    inside = (enh > 2) & (enh < 253)
    assert np.abs(enh - shown["enhanced"])[inside].max() <= 3
    soft = np.clip(x - b, 0, 255)
    inside = (soft > 2) & (soft < 253)
    assert np.abs(soft - shown["soft_tissue"])[inside].max() <= 3

    # full-resolution downloads: 16-bit PNG and derived DICOM in the source's study
    png16 = Image.open(io.BytesIO(client.get(j["files"]["bone.png"]).content))
    assert png16.size == (96, 128) and png16.mode.startswith("I;16")
    r = client.get(j["files"]["enhanced.dcm"])
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
    src, out = pydicom.dcmread(io.BytesIO(data)), pydicom.dcmread(io.BytesIO(r.content))
    assert out.StudyInstanceUID == src.StudyInstanceUID and out.PatientID == "P123"
    assert out.SeriesInstanceUID != src.SeriesInstanceUID and (out.Rows, out.Columns) == (128, 96)
    assert client.get(j["files"]["decomposition.json"]).json()["options"]["w"] == 1.5


def test_upload_png_and_model_loaded_once(client):
    a = (np.linspace(0, 255, 80)[None, :] * np.ones((72, 1))).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    for name in ("ramp.png", "no-suffix"):  # a missing suffix is guessed from the content
        r = client.post("/api/decompose", files={"file": (name, buf.getvalue(), "image/png")})
        assert r.status_code == 200, r.text
        j = r.json()
        assert j["shape"] == [72, 80]
        assert _png(client, j["images"]["soft_tissue"]).shape == (72, 80)
        assert np.array_equal(_png(client, j["images"]["input"]), a)
    assert client.loads == ["bone"]


@pytest.mark.parametrize(
    "upload, params, fragment",
    [
        (("junk.dcm", b"\0" * 128 + b"DICM" + b"\x01" * 300), {}, "junk.dcm"),
        (("empty.png", b""), {}, "empty"),
        (("text.png", b"hello, not an image"), {}, "text.png"),
        (("chest.dcm", None), {"method": "nonesuch"}, "unknown method"),
        (("chest.dcm", None), {"w": "nan"}, "finite"),
    ],
)
def test_bad_upload_400(client, tmp_path, upload, params, fragment):
    name, data = upload
    data = synthetic_cr() if data is None else data
    r = client.post("/api/decompose", files={"file": (name, data, "application/octet-stream")}, params=params)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["detail"] and str(tmp_path) not in r.json()["detail"]
    assert len(client.app.state.store) == 0 and not any((tmp_path / "results").iterdir())  # nothing left behind


def test_unknown_result_404_and_lru(client):
    assert client.get("/api/results/" + "0" * 32 + "/bone.png").status_code == 404
    ids = []
    for seed in range(4):  # max_results=3: the first is evicted
        r = client.post("/api/decompose", files={"file": ("c.dcm", synthetic_cr((64, 64), seed), "application/dicom")})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    assert client.get(f"/api/results/{ids[0]}/bone.png").status_code == 404
    assert client.get(f"/api/results/{ids[1]}/bone.png").status_code == 200
    assert client.get(f"/api/results/{ids[1]}/nonesuch.png").status_code == 404
    assert client.get(f"/api/results/{ids[1]}/files/..%2Fbone.png").status_code == 404


def test_index_page_and_methods(client, tiny_ckpt):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "/api/decompose" in page and '<canvas id="c_enhanced"' in page and 'type="range"' in page
    assert "http://" not in page and "https://" not in page  # self-contained: no CDN
    j = client.get("/api/methods").json()
    assert j["default"] == "bone" and j["methods"] == [{"name": "bone", "checkpoint": str(tiny_ckpt), "views": False}]
    assert isinstance(j["pretrained"], list)


def test_result_store_lru_never_removes_results_in_progress(tmp_path):
    from cxrdecomp.serve.web import StoreFull

    s = ResultStore(tmp_path, max_count=2, max_pending=3)
    a, fa = s.new()
    b, _ = s.new()
    c, _ = s.new()
    with pytest.raises(StoreFull):
        s.new()  # the queue is full
    for r in (a, b):
        s.commit(r)
    assert s.get(a) == fa  # a is now the most recently used
    assert s.get(c) is None and (tmp_path / c).is_dir()  # in progress: not served, not removed
    s.commit(c)
    assert s.get(b) is None and s.get(a) is not None and s.get(c) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a, c])
    d, _ = s.new()
    s.discard(d)  # a failed upload removes only itself
    assert s.get(a) is not None and s.get(c) is not None and not (tmp_path / d).exists()
    assert s.get("../etc") is None


def test_concurrent_uploads_beyond_max_results_never_fail(client):
    """Reproducer of issue 15 item 3: 8 concurrent uploads with max_results=3 gave 5×500. Now each is 200 (or 503 with
    Retry-After when the queue is full), and a bad upload into a full store removes no good result."""
    from concurrent.futures import ThreadPoolExecutor

    def post(seed):
        return client.post("/api/decompose", files={"file": ("c.dcm", synthetic_cr((64, 64), seed), "application/dicom")})

    with ThreadPoolExecutor(8) as pool:
        rs = list(pool.map(post, range(8)))
    assert all(r.status_code in (200, 503) for r in rs), [r.status_code for r in rs]
    assert all("Retry-After" in r.headers for r in rs if r.status_code == 503)
    ok = [r.json()["id"] for r in rs if r.status_code == 200]
    assert len(ok) >= 3
    kept = [i for i in ok if client.get(f"/api/results/{i}").status_code == 200]
    assert len(kept) == 3
    bad = client.post("/api/decompose", files={"file": ("x.png", b"not an image", "image/png")})
    assert bad.status_code == 400
    assert all(client.get(f"/api/results/{i}/bone.png").status_code == 200 for i in kept)


def test_full_queue_is_503_with_retry_after(client):
    store = client.app.state.store
    held = [store.new()[0] for _ in range(store.max_pending)]
    r = client.post("/api/decompose", files={"file": ("c.dcm", synthetic_cr((64, 64), 0), "application/dicom")})
    assert r.status_code == 503 and r.headers["Retry-After"] == "5" and "busy" in r.json()["detail"]
    for h in held:
        store.discard(h)


def test_ct_upload_400_names_the_file(client):
    ds = pydicom.dcmread(io.BytesIO(synthetic_cr((64, 64))))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    ds.Modality = "CT"
    buf = io.BytesIO()
    ds.save_as(buf)
    r = client.post("/api/decompose", files={"file": ("scan.dcm", buf.getvalue(), "application/dicom")})
    assert r.status_code == 400
    assert r.json()["detail"].startswith("scan.dcm: not a projection radiograph (Modality CT")


@pytest.fixture(scope="module")
def tiny_xraysyn_ckpts(tmp_path_factory):
    """Tiny random XraySyn checkpoints: the 3DPN alone (False) and with a 2DRN (True)."""
    return {r: tiny_xraysyn(tmp_path_factory.mktemp("ckpt") / f"xraysyn_{r}", refine=r) for r in (False, True)}


@pytest.fixture()
def views_client(request, tiny_ckpt, tiny_xraysyn_ckpts, tmp_path):
    """A server with a bone U-Net ("bone") and an XraySyn model ("xraysyn"; with a 2DRN when the test parametrizes
    this fixture with True); ``prior_runs`` counts the 3DPN's runs."""
    ckpts = {"bone": str(tiny_ckpt), "xraysyn": str(tiny_xraysyn_ckpts[getattr(request, "param", False)])}
    runs = []

    def factory(method):
        dec = Decomposer.from_pretrained(ckpts[method], device="cpu")
        if method == "xraysyn":
            dec.model.prior.register_forward_hook(lambda *_: runs.append(1))
        return dec

    app = create_app(factory, ckpts, default_method="xraysyn", results_dir=tmp_path / "results", max_results=3, max_views=2)
    with TestClient(app) as c:
        c.prior_runs = runs
        yield c


def _upload(client, method: str) -> dict:
    r = client.post("/api/decompose", files={"file": ("ramp.png", ramp_png(), "image/png")}, params={"method": method})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("views_client, size", [(False, 16), (True, 32)], indirect=["views_client"], ids=["3dpn", "3dpn+2drn"])
def test_xraysyn_result_view_png_at_two_angles(views_client, size, tmp_path):
    from cxrdecomp.io.images import to_uint8
    from cxrdecomp.io.radiograph import read_radiograph
    from cxrdecomp.methods.xraysyn.predict import views

    c = views_client
    assert {m["name"]: m["views"] for m in c.get("/api/methods").json()["methods"]} == {"bone": False, "xraysyn": True}
    j = _upload(c, "xraysyn")
    assert j["views"] == {"url": f"/api/results/{j['id']}/view.png", "max_angle": 18.0, "size": [size, size]}
    assert len(c.prior_runs) == 1  # the decomposition
    got = {}
    for az in (-9, 9, -9):
        r = c.get(j["views"]["url"], params={"azimuth": az})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
        got.setdefault(az, []).append(r.content)
    assert got[-9][0] == got[-9][1] and got[-9][0] != got[9][0]
    assert len(c.prior_runs) == 2  # one 3DPN run for all the views: each angle only re-renders its prediction
    shown = {az: np.asarray(Image.open(io.BytesIO(b[0]))) for az, b in got.items()}
    assert all(a.shape == (size, size) and a.dtype == np.uint8 and a.std() > 1 for a in shown.values())
    # the same images as the views of the method's own function on the input the network saw
    (tmp_path / "ramp.png").write_bytes(ramp_png())
    dec = c.app.state.decomposers("xraysyn")
    x = dec.to_model_size(torch.from_numpy(read_radiograph(tmp_path / "ramp.png").image)[None, None])
    ref = views(dec.model, x, torch.tensor([[-9.0, 0.0], [9.0, 0.0]]))["image"][0]
    for k, az in enumerate((-9, 9)):
        assert np.abs(shown[az].astype(int) - to_uint8(ref[k]).astype(int)).max() <= 1


def test_view_png_400_for_other_methods_and_angles_out_of_range(views_client):
    c = views_client
    b = _upload(c, "bone")
    assert b["views"] is None
    r = c.get(f"/api/results/{b['id']}/view.png", params={"azimuth": 9})
    detail = r.json()["detail"]
    assert r.status_code == 400 and "'bone'" in detail and "no novel views" in detail and "\n" not in detail
    url = _upload(c, "xraysyn")["views"]["url"]
    for params, fragment in [({"azimuth": 19}, "azimuth 19°"), ({"azimuth": -18.5}, "azimuth -18.5°"),
                             ({"elevation": 30}, "elevation 30°"), ({"azimuth": "nan"}, "azimuth nan°")]:
        r = c.get(url, params=params)
        assert r.status_code == 400 and fragment in r.json()["detail"] and "±18°" in r.json()["detail"], (params, r.text)
    assert c.get(url, params={"azimuth": 18, "elevation": -18}).status_code == 200  # the bounds themselves are served
    assert c.get("/api/results/" + "0" * 32 + "/view.png").status_code == 404
    assert c.get(url.replace("view.png", "bone.png")).status_code == 200  # the display PNGs are still served


def test_view_cache_bounded_and_dropped_with_its_result(views_client):
    c, cache = views_client, views_client.app.state.views
    ids = [_upload(c, "xraysyn")["id"] for _ in range(3)]
    for i in ids:
        assert c.get(f"/api/results/{i}/view.png").status_code == 200
    assert len(cache) == 2 and ids[0] not in cache  # max_views=2: least recently used dropped first
    assert c.get(f"/api/results/{ids[0]}/view.png", params={"azimuth": 3}).status_code == 200  # computed again
    assert ids[0] in cache and ids[1] not in cache
    for _ in range(3):  # max_results=3: the xraysyn results are removed ...
        _upload(c, "bone")
    assert len(cache) == 0  # ... and their predictions with them
    assert c.get(f"/api/results/{ids[0]}/view.png").status_code == 404
