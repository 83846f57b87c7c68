"""Shared test fixtures: where the data is, and which array backends can run here.

The real-data tests find the data as the package does (files.resolve_data_dir):
`pytest --data-dir D`, else env FLMN_DATA_DIR, else ./data. They skip, saying which files are
missing where, when the data is not there.
"""
import pytest

from flmn_np.core import levels
from flmn_np.core.backend import cupy_status
from flmn_np.data.files import KNOWN_FILES, MNIST_FILES, resolve_data_dir
from flmn_np.data.omniglot import omniglot_files


def pytest_addoption(parser):
    parser.addoption("--data-dir", default=None,
                     help="dataset folder for the real-data tests (default: env FLMN_DATA_DIR, else ./data)")


def _require(root, names, what):
    """Skip the test unless every known file in `names` is under `root`."""
    missing = [KNOWN_FILES[n].relpath for n in names if not (root / KNOWN_FILES[n].relpath).is_file()]
    if missing:
        pytest.skip(f"no {what} data: {', '.join(missing)} not under {root} "
                    f"(pass --data-dir or set FLMN_DATA_DIR; see data/README.md)")
    return root


@pytest.fixture(scope="session")
def data_root(request):
    """The data directory the package would use, whether or not the files are there."""
    return resolve_data_dir(request.config.getoption("--data-dir")).absolute()


@pytest.fixture(scope="session")
def data_dir(data_root):
    """The real dataset folder, holding both Omniglot zips; skips the test when they are absent."""
    return _require(data_root, omniglot_files(), "Omniglot")


@pytest.fixture(scope="session")
def mnist_dir(data_root):
    """The real dataset folder, holding the MNIST test files; skips the test when they are absent."""
    return _require(data_root, MNIST_FILES, "MNIST")


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


@pytest.fixture(autouse=True)
def plain_levels_after_each_test():
    """A command run in-process holds its level for the process (core/cpu_level.start_level):
    every test starts from the defaults, whatever the one before it ran."""
    yield
    levels.reset()
