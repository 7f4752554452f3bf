"""download_sdss_field against a loopback HTTP server laid out like the DR17 SAS."""

import shutil
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from bliss.cli.main import run
from bliss.errors import BlissConfigError, BlissIOError, BlissValueError
from bliss.surveys.sdss import download_sdss_field, read_sdss_field, sdss_file_urls
from tests.conftest import compose_config
from tests.unit.surveys.conftest import CAMCOL, FIELD, RUN, SDSS_CUTOUTS

BANDS = ("g", "r")


class _Server:
    """A static file server on 127.0.0.1 that records the paths it was asked for."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "_Server":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _sas_tree(root: Path, bands: tuple[str, ...] = BANDS) -> Path:
    """Copy the cut-outs to where the SAS keeps them: ``root/photoObj/...``, ``root/photo/redux/...``."""
    base = "http://x/photoObj"
    for relative, url in sdss_file_urls(RUN, CAMCOL, FIELD, bands, base, photoobj=True).items():
        target = root / url.removeprefix("http://x/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SDSS_CUTOUTS / relative, target)
    return root


@pytest.fixture
def sas(tmp_path):
    with _Server(_sas_tree(tmp_path / "sas")) as server:
        yield server


def test_urls_follow_the_dr17_layout():
    urls = sdss_file_urls(94, 1, 12)
    assert len(urls) == 12
    base = "https://data.sdss.org/sas/dr17/eboss"
    assert urls["94/1/12/frame-u-000094-1-0012.fits.bz2"] == (
        f"{base}/photoObj/frames/301/94/1/frame-u-000094-1-0012.fits.bz2"
    )
    assert urls["94/1/12/fpM-000094-z1-0012.fit.gz"] == (
        f"{base}/photo/redux/301/94/objcs/1/fpM-000094-z1-0012.fit.gz"
    )
    assert urls["94/1/12/psField-000094-1-0012.fit"] == (
        f"{base}/photo/redux/301/94/objcs/1/psField-000094-1-0012.fit"
    )
    assert (
        urls["94/1/photoField-000094-1.fits"] == f"{base}/photoObj/301/94/photoField-000094-1.fits"
    )
    mirror = sdss_file_urls(2583, 2, 136, ("r",), "http://m/a/", redux_url="http://n/redux/")
    assert mirror["2583/2/136/frame-r-002583-2-0136.fits.bz2"] == (
        "http://m/a/frames/301/2583/2/frame-r-002583-2-0136.fits.bz2"
    )
    assert mirror["2583/2/136/psField-002583-2-0136.fit"] == (
        "http://n/redux/301/2583/objcs/2/psField-002583-2-0136.fit"
    )


def test_download_then_read(sas, tmp_path):
    data_dir = tmp_path / "data"
    paths = download_sdss_field(RUN, CAMCOL, FIELD, data_dir, f"{sas.url}/photoObj", BANDS)
    assert len(paths) == 6 and len(sas.requests) == 6
    for path in paths:
        assert path.read_bytes() == (SDSS_CUTOUTS / path.relative_to(data_dir)).read_bytes()
    assert (data_dir / "94/1/photoField-000094-1.fits").is_file()
    assert not list(data_dir.rglob("*.tmp"))
    field = read_sdss_field(data_dir, RUN, CAMCOL, FIELD, bands=BANDS)
    assert np.isfinite(field.images).mean() > 0.9


def test_complete_files_are_skipped_and_incomplete_ones_fetched_again(sas, tmp_path):
    data_dir = tmp_path / "data"
    download_sdss_field(RUN, CAMCOL, FIELD, data_dir, f"{sas.url}/photoObj", BANDS)
    sas.requests.clear()
    download_sdss_field(RUN, CAMCOL, FIELD, data_dir, f"{sas.url}/photoObj", BANDS)
    assert sas.requests == []
    frame = data_dir / "94/1/12/frame-r-000094-1-0012.fits.bz2"
    frame.write_bytes(frame.read_bytes()[:-100])
    psfield = data_dir / "94/1/12/psField-000094-1-0012.fit"
    psfield.write_bytes(psfield.read_bytes()[:5000])
    download_sdss_field(RUN, CAMCOL, FIELD, data_dir, f"{sas.url}/photoObj", BANDS)
    assert sorted(Path(request).name for request in sas.requests) == [
        "frame-r-000094-1-0012.fits.bz2",
        "psField-000094-1-0012.fit",
    ]
    assert frame.read_bytes() == (SDSS_CUTOUTS / "94/1/12" / frame.name).read_bytes()


def test_missing_remote_file_names_the_url(sas, tmp_path):
    with pytest.raises(
        BlissIOError, match=r"frames/301/94/1/frame-g-000094-1-0013.fits.bz2: .*HTTP 404"
    ):
        download_sdss_field(RUN, CAMCOL, 13, tmp_path / "data", f"{sas.url}/photoObj", BANDS)


def test_truncated_remote_file_leaves_nothing_behind(sas, tmp_path):
    served = Path(sas.httpd.RequestHandlerClass.keywords["directory"])
    remote = served / "photoObj/frames/301/94/1/frame-r-000094-1-0012.fits.bz2"
    remote.write_bytes(remote.read_bytes()[:20_000])
    data_dir = tmp_path / "data"
    with pytest.raises(BlissIOError, match="frame-r-000094-1-0012.fits.bz2: .*not a complete FITS"):
        download_sdss_field(RUN, CAMCOL, FIELD, data_dir, f"{sas.url}/photoObj", BANDS)
    folder = data_dir / "94/1/12"
    assert sorted(path.name for path in folder.iterdir()) == ["frame-g-000094-1-0012.fits.bz2"]


def test_unreachable_server_names_the_url(tmp_path):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}/photoObj"
    with pytest.raises(BlissIOError, match=f"{base}/frames/301/94/1/frame-g-.*cannot be reached"):
        download_sdss_field(RUN, CAMCOL, FIELD, tmp_path / "data", base, BANDS, timeout_s=5)
    assert not list((tmp_path / "data").rglob("*.fit*"))


def test_bad_ids_are_refused(tmp_path):
    with pytest.raises(BlissValueError, match="camcol=9"):
        download_sdss_field(RUN, 9, FIELD, tmp_path)
    with pytest.raises(BlissValueError, match="bands=\\['r', 'y'\\]"):
        download_sdss_field(RUN, CAMCOL, FIELD, tmp_path, bands=("r", "y"))


def test_photoobj_url_follows_the_dr17_layout():
    urls = sdss_file_urls(94, 1, 12, photoobj=True)
    assert urls["94/1/12/photoObj-000094-1-0012.fits"] == (
        "https://data.sdss.org/sas/dr17/eboss/photoObj/301/94/1/photoObj-000094-1-0012.fits"
    )
    assert len(urls) == 13 and len(sdss_file_urls(94, 1, 12)) == 12


def test_mode_download_fetches_a_field_ready_for_predict_and_evaluate(tmp_path):
    with _Server(_sas_tree(tmp_path / "sas", tuple("ugriz"))) as sas:
        cfg = compose_config(
            [
                "mode=download",
                "survey=sdss_frames",
                f"survey.data_dir={tmp_path / 'data'}",
                f"download.base_url={sas.url}/photoObj",
            ],
            tmp_path,
        )
        paths = run(cfg)
        assert (
            len(paths) == len(sas.requests) == 13
        )  # 5 frames, 5 fpM, psField, photoField, photoObj
    for path in paths:
        assert (
            path.read_bytes() == (SDSS_CUTOUTS / path.relative_to(tmp_path / "data")).read_bytes()
        )


def test_mode_download_needs_sdss_frames(tmp_path):
    with pytest.raises(BlissConfigError, match="survey=sdss is not one"):
        run(compose_config(["mode=download"], tmp_path))
