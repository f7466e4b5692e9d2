"""The DICOM node against a real Orthanc (Debian package `orthanc`, started here on loopback with a temporary
configuration): derived series arrive in the source's study with their descriptions; with Orthanc down they wait in
the node's outbox and arrive exactly once when it is back. Skips, saying why, where Orthanc is not installed
(.ci/run installs it)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::cxrdecomp.io.radiograph.RadiographWarning"),
    pytest.mark.filterwarnings("ignore:.*unlikely to represent the intended person name"),
]
ORTHANC = shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if Path(p).is_file()), None)
if ORTHANC is None:
    pytest.skip("Orthanc is not installed (Debian package `orthanc`; .ci/run installs it)", allow_module_level=True)

from pynetdicom import AE  # noqa: E402
from pynetdicom.sop_class import ComputedRadiographyImageStorage  # noqa: E402

from cxrdecomp import checkpoint  # noqa: E402
from cxrdecomp.decomposer import Decomposer  # noqa: E402
from cxrdecomp.io import examples  # noqa: E402
from cxrdecomp.methods.bone_unet.network import build as build_bone_unet  # noqa: E402
from cxrdecomp.serve.pacs import DecompositionSCP, Destination  # noqa: E402

TIMEOUT = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """A throw-away Orthanc: storage in ``root``, REST on ``http_port``, DICOM AET ORTHANC on ``dicom_port``."""

    def __init__(self, root: Path):
        self.root, self.http_port, self.dicom_port = root, _free_port(), _free_port()
        cfg = {"Name": "cxrdecomp-test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
               "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
               "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "Plugins": [], "StableAge": 1}
        (root / "orthanc.json").write_text(json.dumps(cfg))
        self.proc = None

    def start(self) -> "Orthanc":
        self.log = open(self.root / "orthanc.log", "ab")
        self.proc = subprocess.Popen([ORTHANC, str(self.root / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                self.get("/system")
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"Orthanc exited: {(self.root / 'orthanc.log').read_text()[-2000:]}") from None
                time.sleep(0.2)
        raise TimeoutError("Orthanc did not answer in time")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(TIMEOUT)
            self.proc = None
            self.log.close()

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
            return json.loads(r.read())

    def post_instance(self, data: bytes) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/instances", data=data, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def study_series(self, study_uid: str) -> dict[str, int]:
        """SeriesDescription → number of instances, for the study with ``study_uid``."""
        studies = [s for s in self.get("/studies?expand") if s["MainDicomTags"]["StudyInstanceUID"] == study_uid]
        if not studies:
            return {}
        (study,) = studies
        return {s["MainDicomTags"].get("SeriesDescription", ""): len(s["Instances"]) for s in self.get(f"/studies/{study['ID']}/series?expand")}


@pytest.fixture()
def tiny(tmp_path):
    torch.manual_seed(0)
    cfg = {"method": "bone_unet", "model": {"base": 4, "depth": 2}, "input_size": 64}
    folder = checkpoint.save(tmp_path / "tiny", build_bone_unet(base=4, depth=2), cfg, "tiny")
    return Decomposer.from_pretrained(folder, device="cpu"), str(folder)


def _store(port: int, path: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    ae.add_requested_context(ComputedRadiographyImageStorage, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRDECOMP")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()


def _wait(pred, timeout=TIMEOUT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.2)
    return False


DERIVED = ["Bone image (bone_unet, cxrdecomp)", "Bone-enhanced image (bone_unet, cxrdecomp)",
           "Soft-tissue image (bone suppressed) (bone_unet, cxrdecomp)"]


def test_derived_series_reach_a_real_orthanc_in_the_source_study_and_survive_its_outage(tiny, tmp_path):
    import pydicom

    unc, j2k = examples.example_file("RG1_UNCR.dcm"), examples.example_file("RG1_J2KR.dcm")
    (tmp_path / "orthanc").mkdir()
    orthanc = Orthanc(tmp_path / "orthanc").start()
    dec, ckpt = tiny
    scp = DecompositionSCP(dec, tmp_path / "node", forward=Destination("127.0.0.1", orthanc.dicom_port, "ORTHANC"), checkpoint=ckpt,
                           retry_base_s=0.5, retry_max_s=1.0).start("127.0.0.1", 0)
    try:
        studies = {}
        for f in (unc, j2k):
            orthanc.post_instance(f.read_bytes())  # the source is in the PACS, as when it routes a study to the node
            studies[f.name] = str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID)
            _store(scp.port, f)
        assert scp.wait_idle(TIMEOUT) and scp.wait_sent(TIMEOUT)
        for name, uid in studies.items():
            series = orthanc.study_series(uid)
            assert sorted(d for d in series if "cxrdecomp" in d) == DERIVED, (name, series)
            assert len(series) >= 4  # the source's own series beside the three derived ones
        before = {uid: orthanc.study_series(uid) for uid in set(studies.values())}
        n_before = len(orthanc.get("/instances"))

        orthanc.stop()  # the PACS goes down ...
        _store(scp.port, unc)  # ... and the same image is sent again
        assert scp.wait_idle(TIMEOUT)
        assert _wait(lambda: any(j["attempts"] >= 1 for j in scp.outbox.status()))
        assert scp.outbox.status()[0]["instances"] == 3
        orthanc.start()  # ... it comes back, with its storage
        assert scp.wait_sent(TIMEOUT)
        time.sleep(1.0)
        after = {uid: orthanc.study_series(uid) for uid in set(studies.values())}
        assert after == before and len(orthanc.get("/instances")) == n_before  # arrived, exactly once: no duplicate series
        for uid, series in after.items():
            assert all(n == 1 for d, n in series.items() if "cxrdecomp" in d)
    finally:
        scp.stop()
        orthanc.stop()
