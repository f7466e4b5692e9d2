"""DICOM node on loopback: C-ECHO, C-STORE a synthetic CR → derived series written and forwarded."""

from __future__ import annotations

import io
import threading

import pytest
import torch

from cxrdecomp import checkpoint
from cxrdecomp.errors import ConfigError
from cxrdecomp.decomposer import Decomposer
from cxrdecomp.methods.bone_unet.network import build as build_bone_unet

pydicom = pytest.importorskip("pydicom")
pynetdicom = pytest.importorskip("pynetdicom")
from pynetdicom import AE, evt  # noqa: E402
from pynetdicom.sop_class import (  # noqa: E402
    CTImageStorage,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    SecondaryCaptureImageStorage,
    Verification,
)

from cxrdecomp.serve.pacs import DecompositionSCP, Destination  # noqa: E402
from serve_helpers import synthetic_cr  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::cxrdecomp.io.radiograph.RadiographWarning"),
    pytest.mark.filterwarnings("ignore:.*unlikely to represent the intended person name"),
]
TIMEOUT = 5  # seconds for every network operation and wait


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    cfg = {"method": "bone_unet", "model": {"base": 4, "depth": 2}, "input_size": 64}
    return Decomposer.from_pretrained(checkpoint.save(folder, build_bone_unet(base=4, depth=2), cfg, "tiny"), device="cpu")


class Sink:
    """A second Storage SCP on loopback that keeps what it receives (the 'originating PACS')."""

    def __init__(self, port: int = 0):
        self.received: list = []
        self.got = threading.Event()
        ae = AE(ae_title="SINK")
        ae.add_supported_context(SecondaryCaptureImageStorage)
        ae.add_supported_context(DigitalXRayImageStorageForPresentation)
        self.server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]

    def _store(self, event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.received.append(ds)
        if len(self.received) >= 3:
            self.got.set()
        return 0x0000


def scu(port, contexts):
    ae = AE(ae_title="TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    for c in contexts:
        ae.add_requested_context(c)
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRDECOMP")
    assert assoc.is_established
    return assoc


@pytest.fixture()
def node(tiny, tmp_path):
    scps = []

    def make(**kw):
        scp = DecompositionSCP(tiny, tmp_path / "out", **kw).start("127.0.0.1", 0)
        scps.append(scp)
        return scp

    yield make
    for scp in scps:
        scp.stop()


def test_echo_store_and_forward(node, tmp_path):
    sink = Sink()
    try:
        scp = node(forward=Destination("127.0.0.1", sink.port, "SINK"))
        src = pydicom.dcmread(io.BytesIO(synthetic_cr((128, 128))))
        assoc = scu(scp.port, [Verification, ComputedRadiographyImageStorage])
        try:
            assert assoc.send_c_echo().Status == 0x0000
            assert assoc.send_c_store(src).Status == 0x0000
        finally:
            assoc.release()
        assert scp.wait_idle(TIMEOUT) and sink.got.wait(TIMEOUT) and scp.wait_sent(TIMEOUT)

        folder = tmp_path / "out" / src.StudyInstanceUID / src.SOPInstanceUID
        series = set()
        for kind in ("bone", "soft_tissue", "enhanced"):
            ds = pydicom.dcmread(folder / f"{kind}.dcm")
            assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.PatientID == src.PatientID
            assert ds.SeriesInstanceUID != src.SeriesInstanceUID and (ds.Rows, ds.Columns) == (128, 128)
            assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
            series.add(ds.SeriesInstanceUID)
        assert len(series) == 3
        assert (tmp_path / "out" / src.StudyInstanceUID / "index.html").is_file()
        assert not list((tmp_path / "out" / ".incoming").iterdir())  # spool emptied

        got = {ds.SOPInstanceUID: ds for ds in sink.received}
        for kind in ("bone", "soft_tissue", "enhanced"):
            sent = pydicom.dcmread(folder / f"{kind}.dcm")
            assert sent.SOPInstanceUID in got and got[sent.SOPInstanceUID].StudyInstanceUID == src.StudyInstanceUID
            assert got[sent.SOPInstanceUID].pixel_array.tobytes() == sent.pixel_array.tobytes()
    finally:
        sink.server.shutdown()


def test_non_radiograph_skipped_and_other_sop_refused(node, tmp_path):
    scp = node()
    sc = pydicom.dcmread(io.BytesIO(synthetic_cr((64, 64))))
    sc.SOPClassUID = sc.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    sc.Modality = "OT"  # e.g. a screenshot: accepted, logged and skipped
    derived = pydicom.dcmread(io.BytesIO(synthetic_cr((64, 64), seed=1)))
    derived.SOPClassUID = derived.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    derived.Manufacturer = "cxrdecomp"  # our own output routed back: not decomposed again
    assoc = scu(scp.port, [SecondaryCaptureImageStorage])
    try:
        assert assoc.send_c_store(sc).Status == 0x0000
        assert assoc.send_c_store(derived).Status == 0x0000
    finally:
        assoc.release()
    assert scp.wait_idle(TIMEOUT)
    errors = [e for _, _, e in scp.processed]
    assert len(errors) == 2 and "not a projection radiograph" in errors[0] and "derived by cxrdecomp" in errors[1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".incoming"]

    ae = AE(ae_title="TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="CXRDECOMP")
    assert not assoc.is_established  # no accepted presentation context: association aborted
    assoc.release()


def test_spooled_leftovers_processed_at_start(tiny, tmp_path):
    src = synthetic_cr((64, 64))
    spool = tmp_path / "out" / ".incoming"
    spool.mkdir(parents=True)
    (spool / "1.2.3.dcm").write_bytes(src)
    scp = DecompositionSCP(tiny, tmp_path / "out").start("127.0.0.1", 0)
    try:
        assert scp.wait_idle(TIMEOUT)
    finally:
        scp.stop()
    ds = pydicom.dcmread(io.BytesIO(src))
    assert (tmp_path / "out" / ds.StudyInstanceUID / "1.2.3" / "bone.dcm").is_file()


@pytest.mark.parametrize("spec, message", [
    ("host:104", "expected HOST:PORT:AET"), ("host:x:AET", "port 'x' is not a number"), ("host:0:AET", "port '0' is not a number from 1 to 65535"),
    ("h:104:" + "A" * 17, "is longer than 16 characters"), ("::", "expected HOST:PORT:AET"),
])
def test_bad_forward_spec(spec, message):
    with pytest.raises(ConfigError, match=message):
        Destination.parse(spec)


def test_forward_spec():
    assert Destination.parse("10.0.0.5:104:ORTHANC") == Destination("10.0.0.5", 104, "ORTHANC")


def test_forward_survives_a_down_destination_and_a_restart_and_arrives_once(node, tiny, tmp_path):
    """Reproducer of issue 15 item 1: the destination is down when the results are ready. They wait in the outbox
    (attempts logged, state in a job file and `pacs --status`), survive a restart of the node, and arrive exactly once
    when the destination comes back."""
    import socket

    from typer.testing import CliRunner

    from cxrdecomp.cli import app

    with socket.socket() as s:  # a loopback port with nobody listening (yet)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scp = node(forward=Destination("127.0.0.1", port, "SINK"), retry_base_s=0.2, retry_max_s=0.5)
    src = pydicom.dcmread(io.BytesIO(synthetic_cr((64, 64))))
    assoc = scu(scp.port, [ComputedRadiographyImageStorage])
    try:
        assert assoc.send_c_store(src).Status == 0x0000
    finally:
        assoc.release()
    assert scp.wait_idle(TIMEOUT)
    (_, folder, error), = scp.processed
    assert error is None and (folder / "bone.dcm").is_file()
    import time

    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not any(j["attempts"] >= 2 for j in scp.outbox.status()):
        time.sleep(0.05)
    (job,) = scp.outbox.status()
    assert job["instances"] == 3 and job["attempts"] >= 2 and "cannot forward" in job["last_error"]
    scp.stop()  # the node goes down with the send pending
    r = CliRunner().invoke(app, ["pacs", "--status", "-o", str(tmp_path / "out")])
    assert r.exit_code == 0 and "3 instance(s) to SINK@127.0.0.1" in r.output and "1 forward(s) pending" in r.output

    sink = Sink(port)  # the destination comes back ...
    try:
        again = node(forward=Destination("127.0.0.1", port, "SINK"), retry_base_s=0.2, retry_max_s=0.5)  # ... and the node
        assert again.wait_sent(TIMEOUT) and sink.got.wait(TIMEOUT)
        time.sleep(0.5)  # a duplicate would arrive now
        uids = sorted(ds.SOPInstanceUID for ds in sink.received)
        want = sorted(pydicom.dcmread(folder / f"{k}.dcm", stop_before_pixels=True).SOPInstanceUID for k in ("bone", "soft_tissue", "enhanced"))
        assert uids == want  # exactly once each
        assert not list((tmp_path / "out" / ".outbox").glob("*.json"))
    finally:
        sink.server.shutdown()


def test_derived_dx_images_of_a_cr_with_detector_spacing_are_forwarded(node, tmp_path):
    """A CR giving ImagerPixelSpacing gets derived DX images (not Secondary Capture): the forward must offer DX too."""
    sink = Sink()
    try:
        scp = node(forward=Destination("127.0.0.1", sink.port, "SINK"))
        src = pydicom.dcmread(io.BytesIO(synthetic_cr((64, 64))))
        del src.PixelSpacing
        src.ImagerPixelSpacing = [0.2, 0.2]
        assoc = scu(scp.port, [ComputedRadiographyImageStorage])
        try:
            assert assoc.send_c_store(src).Status == 0x0000
        finally:
            assoc.release()
        assert scp.wait_idle(TIMEOUT) and scp.wait_sent(TIMEOUT) and sink.got.wait(TIMEOUT)
        assert sorted(str(ds.SOPClassUID) for ds in sink.received) == [DigitalXRayImageStorageForPresentation] * 3
    finally:
        sink.server.shutdown()


def test_outbox_listing_survives_a_job_finished_while_it_lists(tmp_path):
    """The sender thread deletes a finished job between another thread's directory listing and its read (the race
    CI once hit in ``wait_sent``): the listing must skip the vanished job, not raise."""
    from pathlib import Path

    from cxrdecomp.serve.pacs import Outbox

    box = Outbox(tmp_path / "outbox")
    kept = box.add(Destination("127.0.0.1", 104, "PACS"), [tmp_path / "a.dcm"], "1.2.3")
    gone = box.folder / "1.2.4.json"

    class Listing(type(box.folder)):  # a listing taken just before the sender removed 1.2.4.json
        def glob(self, pattern):
            return iter([gone, kept])

    box.folder = Listing(box.folder)
    assert [p.name for p, _ in box.jobs()] == ["1.2.3.json"]
    assert [s["name"] for s in box.status()] == ["1.2.3"]
    assert isinstance(box.folder, Path)
