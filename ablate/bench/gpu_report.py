"""The GPU benchmark's projection of the Table 3 grid and its text report, from its JSON record.

Pure functions of the record (``ablate.bench.gpu`` writes both): the text ends with the
``key: value`` lines ``ablate.sweep.estimate`` reads.
"""

from __future__ import annotations

import importlib.resources
import math

import yaml
from hydra.utils import get_method

from ablate import overrides, spec
from ablate.bench.gpu_steps import fastest
from ablate.bench.steps import VARIANT_BY_NAME
from ablate.decide import MIN_SEEDS
from ablate.sweep import measured
from ablate.sweep.estimate import forward_macs
from ablate.sweep.grid import values_of

CONF = importlib.resources.files("ablate.conf")
SECTIONS = ("steps", "framework", "packing", "packed_seeds", "end_to_end",
            "projection")  # in the order run
GOAL_HOURS = 2.0  # the Table 3 grid on one GPU in at most this long
# The Table 3 protocol (the paper; conf/dataset/cifar10.yaml holds out 5,000 for validation).
GRID_EPOCHS = 350
GRID_TRAIN_IMAGES = 45_000
GRID_VAL_IMAGES = 5_000  # forward only, once per epoch


# ------------------------------------------------------------------------- 5. projection


def table3_grid() -> list[tuple[str, str, int]]:
    """(model, downsampling, runs) per network of ``conf/sweep/table3.yaml``."""
    params = yaml.safe_load((CONF / "sweep" / "table3.yaml").read_text())
    axes = values_of([overrides.parse(f"{key}={value}")  # Hydra's parser, as the sweeper reads
                      for key, value in params["hydra"]["sweeper"]["params"].items()])
    per_network = math.prod(len(v) for k, v in axes.items() if k not in ("model", "downsample"))
    return [(model, mode, per_network) for model in axes["model"] for mode in axes["downsample"]]


def grid_forward_macs(model: str, downsample: str) -> int:
    layers = yaml.safe_load((CONF / "model" / f"{model}.yaml").read_text())["layers"]
    target = yaml.safe_load((CONF / "downsample" / f"{downsample}.yaml").read_text())
    transform = get_method(target["transform"]["_target_"])
    return forward_macs(transform(spec.normalise(layers)), 3, 32, 10)


def ways_to_share(record: dict, seeds: int) -> list[dict]:
    """Each measured way of filling the device, as total images/s and what shares a run's fixed
    costs: N worker processes side by side (3), or K seeds of a cell packed into one network
    (3b; only K up to the seeds a cell has)."""
    ways = [{"how": f"{r['processes']} process(es)", "images_per_second":
             r["total_images_per_second"], "shared_by": r["processes"]}
            for r in record["packing"] if r.get("total_images_per_second")]
    ways += [{"how": f"{r['k']} packed seeds per job", "images_per_second":
              r["packed_images_per_second"], "shared_by": r["k"]}
             for r in record.get("packed_seeds", []) if r.get("packed_images_per_second")
             and r["k"] <= seeds]
    if not ways:
        single = fastest(record["steps"], record["scale"]["batches"][0])
        if single:
            ways.append({"how": "1 process(es)", "images_per_second":
                         single["images_per_second"], "shared_by": 1})
    return ways


def price(record: dict, seeds: int) -> dict:
    """Wall time of the Table 3 grid with ``seeds`` seeds per cell at the best measured way of
    sharing the device. Packed seeds share start-up and per-epoch work the way concurrent
    processes do: one job's fixed costs serve K runs."""
    networks = table3_grid()
    runs = seeds * sum(count for _, _, count in networks)
    passes = GRID_EPOCHS * (3 * GRID_TRAIN_IMAGES + GRID_VAL_IMAGES)  # forward-pass units
    work = seeds * sum(grid_forward_macs(m, d) * count * passes for m, d, count in networks)
    ways = ways_to_share(record, seeds)
    if not ways:
        return {"error": "no throughput was measured"}
    best = max(ways, key=lambda way: way["images_per_second"])
    rate = best["images_per_second"] * 3 * record["forward_macs"]  # forward MACs/s
    ratio = record["framework"].get("ratio") or 1.0
    arithmetic = work / rate / ratio
    e2e = record["end_to_end"]
    overhead = None
    if "epoch_seconds" in e2e and e2e.get("predicted_epoch_seconds"):
        per_epoch = max(0.0, e2e["epoch_seconds"] - e2e["predicted_epoch_seconds"])
        compiles = e2e["cold_extra_seconds"] or 0.0
        overhead = (runs * (e2e["startup_seconds"] + GRID_EPOCHS * per_epoch)
                    + len(networks) * max(0.0, compiles))
    shared = None if overhead is None else overhead / best["shared_by"]
    total = arithmetic + (shared or 0.0)
    return {"seeds": seeds, "runs": runs, "networks": len(networks), "forward_macs": work,
            "how": best["how"], "shared_by": best["shared_by"],
            "images_per_second": best["images_per_second"],
            "framework_ratio": ratio, "framework_measured": "ratio" in record["framework"],
            "arithmetic_seconds": arithmetic, "overhead_seconds": shared, "total_seconds": total,
            "goal_seconds": GOAL_HOURS * 3600}


def projection(record: dict) -> dict:
    """The Table 3 grid as configured (one seed: only processes can share the device), and with
    the seeds ``seeds=auto`` starts every cell with (packed seeds compete)."""
    return {**price(record, 1), "with_seeds": price(record, MIN_SEEDS)}


# ----------------------------------------------------------------------------- report


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"


def _priced(proj: dict, goal: bool = True) -> list[str]:
    """The lines of one :func:`price`; the goal is the one-seed grid's."""
    return [
        f"   each network priced by its forward MACs (conf/model, conf/downsample), at the "
        f"MAC rate of All-CNN-C with {proj['how']}",
        f"   ({proj['images_per_second']:,.0f} images/s in all), slowed by the framework "
        f"ratio {proj['framework_ratio']:.3f}"
        + ("" if proj["framework_measured"] else " (not measured: assumed)")
        + f": {_hours(proj['arithmetic_seconds'])}",
        "   plus start-up, cold compilation per network and per-epoch work beyond the "
        f"arithmetic (from 4), shared {proj['shared_by']} ways: "
        + (_hours(proj["overhead_seconds"]) if proj["overhead_seconds"] is not None
           else "not included (4 has no numbers)"),
        f"   projected wall time on this device: {_hours(proj['total_seconds'])}"
        + (f"   goal: {GOAL_HOURS:.0f} h   "
           + ("(within the goal)" if proj["total_seconds"] <= proj["goal_seconds"]
              else f"({proj['total_seconds'] / proj['goal_seconds']:.1f}x the goal)")) * goal]


def render(record: dict) -> str:
    """The text report: a pure function of the JSON record."""
    dev, scale = record["device"], record["scale"]
    macs = record["forward_macs"]
    peak = dev.get("peak_bf16_tflops")
    lines = [
        "GPU benchmark: python -m ablate.bench.gpu " + " ".join(record["arguments"]),
        f"date {record['date']}; device {dev['name']} ({dev['kind']}); torch {record['torch']}"
        f" (CUDA {record['cuda'] or 'none'}); python {record['python']}; {record['cpus']} CPUs"
        f" ({record['threads']} torch threads);"
        f" {record['elapsed_seconds']:.0f} s in all"
        + "".join(f", {name} {record['sections_seconds'][name]:.0f} s" for name in SECTIONS
                  if name in record["sections_seconds"]),
        f"All-CNN-C at width {scale['width']}, {scale['size']} px, {scale['channels']} channels: "
        f"{macs / 1e9:.4f} GMAC per forward pass; a training image costs 3 forward passes "
        f"({6 * macs / 1e9:.3f} GFLOP).",
        f"Peak for utilisation (MFU): {'n/a' if peak is None else f'{peak:,.0f}'} TFLOP/s "
        f"dense bf16 ({dev['peak_source']}).",
        "",
        "1. Training-step throughput (plain loop: forward, loss, backward, SGD step; synthetic",
        "   data already on the device; best of "
        f"{scale['repeats']} timed repeats after {scale['warmup']} warm-up steps; the first",
        "   step, which compiles, autotunes cuDNN and allocates, is timed apart and excluded).",
        *(["   fp32 keeps torch's default: cuDNN may use TF32 for its convolutions "
           f"(torch.backends.cudnn.allow_tf32 = {record['cudnn_allow_tf32']})."]
          * (dev["kind"] == "cuda")),
        f"   {'variant':<31} {'batch':>5} {'images/s':>10} {'TFLOP/s':>8} {'MFU':>6} "
        f"{'first step':>11}  compile"]
    for row in record["steps"]:
        label = f"   {row['variant']:<31} {row['batch']:>5} "
        if row.get("skipped") or row.get("error"):
            lines.append(label + f"skipped: {row['skipped']}" if row.get("skipped")
                         else label + f"not measured: {row['error']}")
            continue
        ips = row["images_per_second"]
        tflops = ips * 6 * macs / 1e12
        mfu = f"{tflops / peak:.1%}" if peak else "n/a"
        steady = row["seconds"] / row["steps"]
        compile_note = (f"~{row['first_step_seconds'] - steady:.1f} s"
                        if VARIANT_BY_NAME[row["variant"]].compile else "")
        lines.append(label + f"{ips:>10,.0f} {tflops:>8.2f} {mfu:>6} "
                     f"{row['first_step_seconds']:>9.2f} s  {compile_note}")

    lines += ["", "2. Framework ratio at the fastest variant of 1, the runs' batch size "
              "(alternating, best of each; same warm-up, compile excluded):"]
    fw = record["framework"]
    if "ratio" in fw:
        lines.append(f"   {fw['variant']}, batch {fw['batch']}: plain {fw['plain_ms']:.2f} "
                     f"ms/step, Lightning + Classifier {fw['lightning_ms']:.2f} ms/step, ratio "
                     f"{fw['ratio']:.3f} (plain / Lightning time; 1.0 = no overhead)")
    else:
        lines.append(f"   not measured: {fw.get('error')}")

    lines += ["", "3. Packing: N worker processes on the one device, released together, each "
              f"training for {scale['window_seconds']:.0f} s",
              "   (the fastest variant of 1 at the runs' batch size; compile and warm-up before "
              "the window; Ray not used).",
              f"   {'processes':>9} {'total images/s':>15} {'per process':>12} {'slowest':>9} "
              f"{'overlap':>8}"]
    for row in record["packing"]:
        if "error" in row:
            lines.append(f"   {row['processes']:>9} not measured: {row['error']}")
            continue
        lines.append(f"   {row['processes']:>9} {row['total_images_per_second']:>15,.0f} "
                     f"{row['per_process_images_per_second']:>12,.0f} "
                     f"{row['slowest_process_images_per_second']:>9,.0f} "
                     f"{row['window_overlap']:>8.0%}")

    lines += ["", "3b. Packed seeds (hydra.sweeper.pack=K): K seeds of one cell trained one after "
              "another vs as one network",
              "   of K-group convolutions, in one process, the same plain step on both sides "
              f"(best of {scale['repeats']}, alternating;",
              "   no compile: K separate networks would compile K times). MFU of the packed side; "
              "peak memory above the start."]
    rows = record.get("packed_seeds", [])
    variant = next((r["variant"] for r in rows if r.get("variant")), None)
    if variant:
        lines.append(f"   variant {variant}, batch {scale['batches'][0]} per seed")
    lines.append(f"   {'K':>3} {'separate img/s':>15} {'packed img/s':>13} {'packed/sep':>11} "
                 f"{'TFLOP/s':>8} {'MFU':>6} {'MiB sep':>8} {'MiB packed':>11}")
    for row in rows:
        if "error" in row:
            lines.append(f"   {row['k']:>3} not measured: {row['error']}")
            continue
        tflops = row["packed_images_per_second"] * 6 * macs / 1e12
        lines.append(f"   {row['k']:>3} {row['separate_images_per_second']:>15,.0f} "
                     f"{row['packed_images_per_second']:>13,.0f} {row['speedup']:>11.2f} "
                     f"{tflops:>8.2f} {f'{tflops / peak:.1%}' if peak else 'n/a':>6} "
                     f"{row['separate_peak_mib']:>8.0f} {row['packed_peak_mib']:>11.0f}")

    e2e = record["end_to_end"]
    lines += ["", "4. A real run end to end:"]
    if "epoch_seconds" in e2e:
        runs = e2e["runs"]
        lines += [
            f"   {e2e['command']}",
            "   runs (epochs, wall from launch to exit): " + ", ".join(
                f"{label} {runs[label]['epochs']}, "
                f"{runs[label]['ended'] - runs[label]['launched']:.1f} s"
                for label in ("cold", "short", "long") if label in runs),
            f"   start-up, launch to the end of the first step (process, imports, Hydra, data to "
            f"the device, Lightning set-up, {'compilation from warm caches, ' * e2e['compiles']}"
            f"first step): {e2e['startup_seconds']:.1f} s",
            "   compilation with cold caches (the cold run's wall minus the same warm run's): "
            + (f"{e2e['cold_extra_seconds']:.1f} s" if e2e["cold_extra_seconds"] is not None
               else "none (the run does not compile)"),
            f"   per epoch ({e2e['train_images_per_epoch']:,} training + "
            f"{e2e['val_images_per_epoch']:,} validation images; the long run's time after its "
            f"first step minus the short run's, per extra epoch): {e2e['epoch_seconds']:.3f} s"]
        predicted = e2e.get("predicted_epoch_seconds")
        if e2e["epoch_seconds"] <= 0:
            lines.append("   the extra epochs took less time than the runs' noise: no verdict")
        elif predicted:
            busy = predicted / e2e["epoch_seconds"]
            lines.append(f"   predicted from 1 ({e2e['variant']}, batch {e2e['batch']}) for the "
                         f"same images: {predicted:.3f} s per epoch, so the device was busy "
                         f"{busy:.0%} of each epoch.")
            # 1 draws its batches through the same on-device TensorBatches (shuffle, one
            # index_select per batch), so the batching is inside the prediction already.
            if busy >= 0.8:
                lines.append("   Verdict: the on-device data path kept the device busy.")
            else:
                longer = GRID_TRAIN_IMAGES / max(1, e2e["train_images_per_epoch"])
                lines.append(
                    "   Verdict: the device idled, but not for the data: 1 batches the same way. "
                    "The gap is per-epoch work\n   around the arithmetic (validation set-up, "
                    "checkpoint, the short last batch, Lightning's epoch hooks),\n   which a "
                    f"{GRID_TRAIN_IMAGES:,}-image epoch spreads over {longer:.0f}x more steps.")
        else:
            lines.append("   no prediction: 1 has no measurement of the run's variant and batch")
    else:
        lines.append(f"   not measured: {e2e.get('error')}")

    proj = record["projection"]
    lines += ["", f"5. Projection: Table 3 grid ({proj.get('runs', '?')} runs; {GRID_EPOCHS} "
              "epochs "
              f"x {GRID_TRAIN_IMAGES:,} training images + {GRID_VAL_IMAGES:,} validation images "
              "forward-only each)"]
    if "total_seconds" in proj:
        lines += _priced(proj)
        seeded = proj.get("with_seeds", {})
        if "total_seconds" in seeded:
            lines += [f"   with {seeded['seeds']} seeds per cell (seeds=auto's first round, "
                      f"{seeded['runs']} runs; packed seeds may share the device too):",
                      *_priced(seeded, goal=False)]
        if dev["kind"] != "cuda":
            lines.append("   (a CPU smoke run at toy size: this projection means nothing)")
    else:
        lines.append(f"   not possible: {proj.get('error')}")

    lines += ["", f"Estimate input: {record['macs_per_second_basis']}",
              measured.format_fields({measured.DEVICE_KIND: dev["kind"],
                                      measured.BEST_MACS: record["macs_per_second_best"]})]
    return "\n".join(lines)
