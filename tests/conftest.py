"""Shared test fixtures: where the data is, and which array backends can run here."""
import os
from pathlib import Path

import pytest

from flmn_np.core.backend import cupy_status

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"   # the checkout sits beside shared/


def _data_dir():
    """$FLMN_DATA_DIR if set, else ../shared/data beside the repository."""
    return Path(os.environ.get("FLMN_DATA_DIR", SHARED_DATA))


@pytest.fixture(scope="session")
def data_dir():
    """The real dataset folder (omniglot/, mnist/); skips the test when it is absent."""
    d = _data_dir()
    if not (d / "omniglot").is_dir():
        pytest.skip(f"no Omniglot data at {d} (set FLMN_DATA_DIR to the folder holding omniglot/)")
    return d


def backend_params():
    """pytest.param for each backend: numpy, array_api_strict, and cupy (skipped with the reason
    when CuPy or a GPU is missing). Use as @pytest.mark.parametrize("backend", backend_params())."""
    usable, reason = cupy_status()
    cupy_marks = () if usable else pytest.mark.skip(reason=reason)
    return [pytest.param("numpy"), pytest.param("array_api_strict"),
            pytest.param("cupy", marks=cupy_marks)]


@pytest.fixture(params=backend_params())
def backend(request):
    """Each usable backend name in turn."""
    return request.param
