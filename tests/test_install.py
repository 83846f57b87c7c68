"""The package installed, away from the checkout: `pip install` into a fresh virtual environment
gives the commands of pyproject.toml's [project.scripts], and `flmn-train` and `python -m
flmn_np.train`, started in a folder outside the checkout, train as train.py does."""
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import numpy as np
import pytest

from run_helpers import REPO, params_of, tiny_flags, train_in_process

STEPS = 2


def run(args, cwd, env, timeout=120):
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def pip_install(python, source, env):
    """pip install --no-deps --no-build-isolation SOURCE into `python`'s environment (offline:
    the build uses the setuptools already there). A setuptools older than 70.1 builds wheels
    only with the `wheel` package: it is then installed into that environment first."""
    install = [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
               source]
    proc = run(install, source, env)
    if proc.returncode != 0 and "bdist_wheel" in proc.stdout + proc.stderr:
        got = run([python, "-m", "pip", "install", "--quiet", "wheel"], source, env)
        if got.returncode != 0:
            pytest.skip(f"cannot build a wheel here: this setuptools needs the `wheel` package, "
                        f"and pip could not install it ({got.stderr.strip()[-200:]})")
        proc = run(install, source, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(bin folder of a fresh venv with the package installed from a copy of this checkout, a
    folder outside the checkout, the environment to run its commands in)."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"          # a copy: pip's build leaves build/ and *.egg-info beside it
    shutil.copytree(REPO / "flmn_np", source / "flmn_np",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(REPO / "pyproject.toml", source / "pyproject.toml")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True,
                   timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", OPENBLAS_NUM_THREADS="1")
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    # the venv sees this interpreter's packages (NumPy, ...; its own site-packages, also when it
    # is a venv itself), after its own: the installed flmn_np, not the checkout's
    site_dir = run([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()"
                    "['purelib'])"], root, env).stdout.strip()
    ours = {*site.getsitepackages(), sysconfig.get_paths()["purelib"],
            sysconfig.get_paths()["platlib"]}
    (Path(site_dir) / "outer-packages.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    pip_install(bin_dir / "python", source, env)
    outside = root / "work"
    outside.mkdir()
    return bin_dir, outside, env


def test_the_installed_package_is_the_one_imported(installed):
    bin_dir, outside, env = installed
    proc = run([bin_dir / "python", "-c", "import flmn_np; print(flmn_np.__file__)"], outside,
               env)
    assert proc.returncode == 0, proc.stderr
    assert not proc.stdout.strip().startswith(str(REPO)), proc.stdout
    assert "site-packages" in proc.stdout


def test_every_script_of_pyproject_is_installed(installed):
    bin_dir, _, _ = installed
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "flmn-train" in scripts and "flmn-evaluate" in scripts
    assert all((bin_dir / name).is_file() for name in scripts), sorted(scripts)


def test_installed_flmn_train_trains_as_train_py(installed, data_dir, tmp_path, monkeypatch):
    """Two steps through the installed `flmn-train` and `python -m flmn_np.train`, in a folder
    outside the checkout and with the data found by FLMN_DATA_DIR: both end as the same flags
    end through train.py's code in this process, parameter for parameter."""
    bin_dir, outside, env = installed
    env = {**env, "FLMN_DATA_DIR": str(data_dir)}

    def flags(out):
        f = tiny_flags(data_dir, out, **{"--steps": STEPS, "--final-eval-episodes": 2})
        i = f.index("--data-dir")
        return f[:i] + f[i + 2:]           # the data from FLMN_DATA_DIR, as a user's would

    script = run([bin_dir / "flmn-train", *flags("by-script")], outside, env)
    assert script.returncode == 0, script.stderr
    assert f"done: {STEPS} steps" in script.stdout, script.stdout
    module = run([bin_dir / "python", "-m", "flmn_np.train", *flags("by-module")], outside, env)
    assert module.returncode == 0, module.stderr

    monkeypatch.setenv("FLMN_DATA_DIR", str(data_dir))
    assert train_in_process(flags(tmp_path / "by-train-py")) == 0
    want = params_of(tmp_path / "by-train-py")
    for out in ("by-script", "by-module"):
        got = params_of(outside / out)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{out}: {k}")


def test_installed_commands_name_themselves(installed):
    """An error names the command as it was started, and so does --help."""
    bin_dir, outside, env = installed
    proc = run([bin_dir / "flmn-train", "--out", "nothing-here", "--resume"], outside, env)
    assert proc.returncode == 2 and proc.stderr.startswith("flmn-train: error: "), proc.stderr
    proc = run([bin_dir / "python", "-m", "flmn_np.train", "--help"], outside, env)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m flmn_np.train")
    proc = run([bin_dir / "flmn-evaluate", "--help"], outside, env)
    assert proc.returncode == 0 and "usage:" in proc.stdout
