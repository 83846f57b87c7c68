"""The docs hold: docs/one_step.py's plain-NumPy FLMN step passes its finite-difference check
and equals the package's step, and every relative link in docs/*.md reaches an existing file
and heading."""
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from flmn_np.core import flmn
from flmn_np.core.models import ModelConfig, State, step_backward, step_forward

DOCS = Path(__file__).resolve().parent.parent / "docs"


def load_one_step():
    spec = importlib.util.spec_from_file_location("one_step", DOCS / "one_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("eps_inside", [False, True])
def test_one_step_gradients_match_finite_differences(eps_inside):
    errors = load_one_step().check(eps_inside=eps_inside)
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("placement", ["product", "inside"])
def test_one_step_equals_the_package_step(placement):
    """The listing in docs/derivations.md computes what flmn_np.core computes (B = 1)."""
    o = load_one_step()
    p, x, y_prev, y, s, dstate = o.example(seed=3)
    logits, state, cache = o.step_forward(p, x, y_prev, s, eps_inside=placement == "inside")
    dlogits = o.cross_entropy(logits, y)[1]
    grads, dstate_prev = o.step_backward(dlogits, dstate, p, cache)

    cfg = ModelConfig(model="flmn", input_size=o.D, n_classes=o.C, hidden=o.H, slots=o.N,
                      width=o.W, gamma=o.GAMMA, cosine_eps=placement)
    row, head = (lambda a: a[None]), (lambda a: a[None, None])
    mem = flmn.FLMNMemory(M_f=row(s["M_f"]), M_l=row(s["M_l"]), w_r=head(s["w_r"]),
                          w_wf=head(s["w_wf"]), w_u=row(s["w_u"]), w_lu=head(s["w_lu"]))
    state_prev = State(h=row(s["h"]), c=row(s["c"]), r=row(s["r"]), mem=mem)
    logits_pkg, state_pkg, cache_pkg = step_forward(p, row(x), row(y_prev), state_prev, cfg)
    np.testing.assert_allclose(logits_pkg[0], logits, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state_pkg.mem.M_f[0], state["M_f"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(state_pkg.mem.w_lu[0, 0], state["w_lu"])

    dmem = flmn.FLMNMemory(M_f=row(dstate["M_f"]), M_l=row(dstate["M_l"]), w_r=head(dstate["w_r"]),
                           w_wf=head(dstate["w_wf"]), w_u=None, w_lu=None)
    dstate_pkg = State(h=row(dstate["h"]), c=row(dstate["c"]), r=row(dstate["r"]), mem=dmem)
    grads_pkg = {name: np.zeros_like(value) for name, value in p.items()}
    dprev_pkg = step_backward(row(dlogits), dstate_pkg, cache_pkg, p, grads_pkg, cfg)
    for name in p:
        np.testing.assert_allclose(grads_pkg[name], grads[name].reshape(p[name].shape),
                                   rtol=1e-10, atol=1e-12, err_msg=name)
    pkg_prev = {"h": dprev_pkg.h[0], "c": dprev_pkg.c[0], "r": dprev_pkg.r[0],
                "M_f": dprev_pkg.mem.M_f[0], "M_l": dprev_pkg.mem.M_l[0],
                "w_r": dprev_pkg.mem.w_r[0, 0], "w_wf": dprev_pkg.mem.w_wf[0, 0]}
    for name in o.CARRIED:
        np.testing.assert_allclose(pkg_prev[name], dstate_prev[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)


def test_derivations_listing_is_one_step_py():
    """The plain-NumPy listing shown in docs/derivations.md is copied from docs/one_step.py."""
    text = (DOCS / "derivations.md").read_text(encoding="utf-8")
    listings = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert listings, "no python listing in docs/derivations.md"
    source = (DOCS / "one_step.py").read_text(encoding="utf-8")
    for listing in listings:
        assert listing in source


# --- links ----------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose_lines(text):
    """The lines of a markdown text outside fenced code blocks."""
    inside = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif not inside:
            yield line


def anchors(path):
    """GitHub's heading anchors of a markdown file: lower case, punctuation dropped, spaces to
    hyphens, '-1', '-2' ... for repeats."""
    seen, result = {}, set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        result.add(slug if n == 0 else f"{slug}-{n}")
    return result


def doc_links():
    for doc in sorted(DOCS.glob("*.md")):
        for line in prose_lines(doc.read_text(encoding="utf-8")):
            for target in LINK.findall(line):
                if not re.match(r"[a-z]+:", target):
                    yield doc, target


def test_docs_have_links_to_check():
    assert sum(1 for _ in doc_links()) > 10


def code_references():
    """`docs/<name>.md#<anchor>` references in the package, the tests and the benchmarks."""
    root = DOCS.parent
    for path in sorted([*root.glob("flmn_np/**/*.py"), *root.glob("tests/*.py"),
                        *root.glob("benchmarks/*.py")]):
        for m in re.finditer(r"docs/(\w+\.md)(?:#([\w-]+))?", path.read_text(encoding="utf-8")):
            yield path.relative_to(root).as_posix(), m.group(1), m.group(2)


def test_code_references_to_docs_exist():
    missing = [(where, doc, anchor) for where, doc, anchor in code_references()
               if not (DOCS / doc).exists() or (anchor and anchor not in anchors(DOCS / doc))]
    assert not missing


@pytest.mark.parametrize("doc,target", list(doc_links()),
                         ids=lambda v: v.name if isinstance(v, Path) else v)
def test_doc_link_reaches_its_target(doc, target):
    path, _, anchor = target.partition("#")
    file = (doc.parent / path).resolve() if path else doc
    assert file.exists(), f"{doc.name}: {target}: no such file"
    assert file.is_relative_to(DOCS.parent), f"{doc.name}: {target} leaves the repository"
    if anchor:
        assert file.suffix == ".md", f"{doc.name}: {target}: anchor into a non-markdown file"
        assert anchor in anchors(file), f"{doc.name}: {target}: no such heading"
