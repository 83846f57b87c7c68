#!/usr/bin/env bash
# A finished run (public or authors' protocol) made ready to commit: its checkpoints
# parameters-only and its log (results/X/logs/RUN.log) with one progress-bar line per 1,000 steps
# instead of every redraw (other lines unchanged).
# Usage (from the repository root): bash results/public/finish.sh RUN_DIR [--resumable]
# --resumable: a run stopped before its end keeps checkpoint.npz whole, so that --resume goes on.
set -euo pipefail
run=${1%/}
log=$(dirname "$run")/logs/$(basename "$run").log
if [ "${2:-}" = "--resumable" ]; then
    python -m flmn_np.runs.checkpoint strip "$run/best.npz"
else
    python -m flmn_np.runs.checkpoint strip "$run/checkpoint.npz" "$run/best.npz"
fi
python - "$log" <<'PY'
import re
import sys

path = sys.argv[1]
with open(path, encoding="utf-8", newline="") as f:    # keep the \r of the progress bars
    text = f.read()
lines, last_kept = [], None
for line in text.split("\n"):
    parts = [p for p in line.split("\r") if p.strip()]
    for i, part in enumerate(parts):
        step = re.search(r"\| *(\d+)/\d+ \[", part)
        if step is None:                                   # not a progress bar: keep as it is
            lines.append(part)
            continue
        step = int(step.group(1))
        if last_kept is None or step // 1000 != last_kept // 1000 or i == len(parts) - 1:
            lines.append(part.strip())
            last_kept = step
with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
PY
echo "$log: $(wc -l < "$log") lines"
