"""Peak extra memory of exporting the final model: the streamed export vs the previous one.

    python bench/export_memory.py [--mb 300] [--repeats 3]

Each measurement runs in a fresh process: build a model of about --mb MB of fp32 weights,
write it once (warming the page cache and the code paths), reset the peak resident set size
(`echo 5 > /proc/self/clear_refs`), export it again, and report the peak RSS (`VmHWM`) minus
the RSS just before that export. Rows (the median of --repeats processes, spread in brackets):

    previous: the export as it was before (a clone of every tensor, `safetensors.torch.save`
              into one bytes object, `Storage.write_bytes`)
    ours:     `vertex_patterns.training.export.export_model` (tensors written from the
              model's own memory through the checkpoint package's safetensors writer, fsync'd)

Both write the same local directory. Python-level allocations (tracemalloc) are shown too;
torch's own allocations are invisible to tracemalloc, hence the RSS columns.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(method: str, mb: int, out_dir: str) -> dict[str, float]:
    import tracemalloc

    import torch

    from vertex_patterns.storage import Storage
    from vertex_patterns.training.export import export_model
    from vertex_patterns.training.workload import Workload

    torch.manual_seed(0)
    width = 4096
    layers = max(1, round(mb * 1e6 / (width * width * 4)))
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    weights_mb = sum(p.numel() * p.element_size() for p in model.state_dict().values()) / 1e6
    workload = Workload(name="bench", model=model, optimizer=torch.optim.SGD(model.parameters()),
                        scheduler=None, dataset_size=1, batch_size=1, get_batch=lambda ids: ids,
                        loss_fn=lambda m, b: torch.zeros(()), evaluate=None, config={})
    store = Storage()

    def previous() -> None:
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous().clone()
                   for k, v in model.state_dict().items()}
        store.write_bytes(f"{out_dir}/model.safetensors", save(tensors))
        store.write_bytes(f"{out_dir}/config.json", b"{}")

    def ours() -> None:
        export_model(store, out_dir, workload, 1, {})

    run = previous if method == "previous" else ours
    run()  # warm: page cache, imports, allocator pools
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = rss_kb("VmRSS")
    tracemalloc.start()
    run()
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = rss_kb("VmHWM")
    return {"weights_mb": weights_mb, "extra_rss_mb": (peak - before) / 1024,
            "python_peak_mb": py_peak / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=300, help="model size in MB of fp32 weights")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", choices=["previous", "ours"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.mb, args.out)))
        return
    rows = {}
    with tempfile.TemporaryDirectory(prefix="vp-export-mem-") as tmp:
        for method in ("previous", "ours"):
            results = []
            for i in range(args.repeats):
                out = os.path.join(tmp, f"{method}-{i}")
                proc = subprocess.run([sys.executable, __file__, "--child", method, "--mb",
                                       str(args.mb), "--out", out], check=True,
                                      capture_output=True, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"})
                results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            rows[method] = results
    weights = rows["ours"][0]["weights_mb"]
    print(f"model: {weights:.0f} MB of fp32 weights; each row: median of {args.repeats} "
          "processes [min-max]")
    header = f"{'export':<10}{'extra peak RSS MB':>26}{'x weights':>11}{'python peak MB':>18}"
    print(header)
    print("-" * len(header))
    medians = {}
    for method, results in rows.items():
        extra = [r["extra_rss_mb"] for r in results]
        py = [r["python_peak_mb"] for r in results]
        medians[method] = statistics.median(extra)
        spread = f"{statistics.median(extra):.1f} [{min(extra):.1f}-{max(extra):.1f}]"
        print(f"{method:<10}{spread:>26}{statistics.median(extra) / weights:>11.2f}"
              f"{statistics.median(py):>18.1f}")
    ratio = medians["ours"] / medians["previous"] if medians["previous"] else float("nan")
    print(f"ours / previous: {ratio:.3f}")
    target = 4 * 1024 * 1024 / 1e6 + 16  # one 4 MiB write piece, plus allowance for the
    # allocator and the page-cache accounting of the file being written
    verdict = "MET" if medians["ours"] <= target else "NOT MET"
    print(f"[{verdict}] peak extra memory of the streamed export <= one buffer "
          f"(4 MiB piece + 16 MB allowance = {target:.0f} MB): {medians['ours']:.1f} MB")


if __name__ == "__main__":
    main()
