"""``vlmforge profile --plot``: a PNG of where the time goes, drawn with Pillow (already a runtime
dependency; no matplotlib on the device).

One horizontal bar per stage: its median per-run total, as milliseconds and as a share of the
median end-to-end time, sorted longest first; a stacked strip on top shows the same shares in
pipeline order, so the dominant stage is visible at a glance.
"""

from __future__ import annotations

from pathlib import Path

# one colour per stage, stable across plots (Tableau 10)
PALETTE = [(78, 121, 167), (242, 142, 43), (225, 87, 89), (118, 183, 178), (89, 161, 79),
           (237, 201, 72), (176, 122, 161), (255, 157, 167), (156, 117, 95), (186, 176, 172)]
WIDTH, ROW, LEFT, RIGHT, TOP = 900, 26, 130, 190, 70


def stage_shares(report: dict) -> tuple[list[tuple[str, float]], float]:
    """[(stage, median per-run seconds)] in pipeline order, and the median end-to-end seconds."""
    rows = [(name, s["median_s"]) for name, s in report["stages"].items()]
    return rows, report["end_to_end"]["median_s"]


def render(report: dict):
    """The chart as a Pillow image (RGB)."""
    from PIL import Image, ImageDraw, ImageFont

    rows, total = stage_shares(report)
    total = max(total, sum(t for _, t in rows), 1e-12)
    colour = {name: PALETTE[i % len(PALETTE)] for i, (name, _) in enumerate(rows)}
    img = Image.new("RGB", (WIDTH, TOP + ROW * len(rows) + 40), "white")
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    env = report.get("environment", {})
    title = (f"{env.get('family', 'model')} on {env.get('backend', '?')}: end to end {total * 1e3:.1f} ms, "
             f"TTFT {report['ttft_s'] * 1e3:.1f} ms, decode {report['decode_tokens_per_s']:.1f} tokens/s")
    draw.text((10, 8), title, fill="black", font=font)
    x = LEFT  # the stacked strip: stages in pipeline order
    span = WIDTH - LEFT - RIGHT
    for name, t in rows:
        w = span * t / total
        draw.rectangle([x, 30, x + max(w, 1), 50], fill=colour[name])
        x += w
    draw.text((10, 34), "share", fill="black", font=font)
    for i, (name, t) in enumerate(sorted(rows, key=lambda r: -r[1])):
        y = TOP + i * ROW
        draw.text((10, y + 4), name, fill="black", font=font)
        draw.rectangle([LEFT, y, LEFT + max(span * t / total, 1), y + ROW - 6], fill=colour[name])
        draw.text((WIDTH - RIGHT + 10, y + 4), f"{t * 1e3:9.2f} ms {100 * t / total:5.1f}%", fill="black", font=font)
    runs = report.get("runs", 0)
    draw.text((10, img.height - 24), f"median of {runs} runs; stage bars are per-run totals (decode = all steps)",
              fill="gray", font=font)
    return img


def check_plot_path(path) -> Path:
    """Refuse a non-PNG name before any run is spent."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"--plot writes a PNG; give a path ending in .png (got {path.name!r})")
    return path


def write_plot(report: dict, path) -> None:
    """Write the chart as PNG (``report`` is ``ProfileReport.as_dict()``)."""
    render(report).save(check_plot_path(path), format="PNG")
