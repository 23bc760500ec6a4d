"""A generated stand-in for Food-101, so the training recipe runs offline.

Ten Food-101 classes are painted as stylised plated dishes: a plate on a table, with the food
drawn in its own colours, textures and shapes. Position, scale, rotation, plate and table
colours, brightness and pixel noise vary from image to image. The result is an image folder::

    DIR/train/<class>/<class>_<i>.jpg
    DIR/validation/<class>/<class>_<i>.jpg

Each image is drawn from its own random generator, seeded with (seed, class, split, index), so
the dataset is bitwise reproducible whatever order it is generated in.

Write it from the command line with::

    python -m food101hf.demo DIR

(DIR defaults to ``default_demo_dir()``), or from Python with ``make_demo(DIR)``.
"""

from __future__ import annotations

if __name__ == "__main__":  # answer --help and refuse bad flags before numpy loads
    from food101hf.cli import parse_early
    from food101hf.parsers import demo_parser

    parse_early(demo_parser)

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .cli import run
from .errors import DemoFolderError
from .parsers import demo_parser

VERSION = 1  # bump when the drawings change, so cached copies are regenerated
SPLITS = ("train", "validation")
MARKER = ".complete"

Colour = tuple[int, ...]
Point = tuple[float, float]

# Base colours; every image jitters each one a little.
FOOD_COLOURS: dict[str, Colour] = {
    "crust": (214, 150, 70),
    "cheese": (250, 196, 70),
    "pepperoni": (170, 35, 30),
    "rice": (246, 246, 240),
    "nori": (25, 40, 30),
    "salmon": (250, 125, 95),
    "tamago": (250, 210, 60),
    "fry": (245, 205, 90),
    "lettuce": (110, 170, 60),
    "romaine": (50, 120, 45),
    "crouton": (215, 170, 100),
    "parmesan": (250, 245, 220),
    "sponge": (85, 48, 28),
    "cream": (240, 225, 200),
    "ganache": (45, 22, 14),
    "dough": (200, 135, 65),
    "waffle": (225, 165, 70),
    "waffle_pocket": (170, 105, 40),
    "butter": (255, 235, 150),
    "steak": (125, 62, 42),
    "fat": (230, 200, 170),
    "grill": (40, 22, 14),
    "cone": (215, 160, 90),
    "pasta": (240, 222, 150),
    "sauce": (150, 42, 28),
    "mince": (95, 40, 25),
}
TABLE_COLOURS: list[Colour] = [
    (150, 105, 65),  # oak
    (90, 60, 40),  # walnut
    (200, 170, 130),  # pine
    (70, 75, 80),  # slate
    (225, 220, 205),  # linen
    (60, 90, 140),  # blue cloth
]
PLATE_COLOURS: list[Colour] = [(246, 246, 242), (238, 230, 210), (215, 215, 215), (200, 215, 230), (45, 45, 50)]
ICING_COLOURS: list[Colour] = [(240, 150, 190), (90, 50, 30), (250, 245, 240), (150, 200, 240)]
SPRINKLE_COLOURS: list[Colour] = [(230, 40, 60), (250, 220, 40), (60, 160, 230), (90, 200, 90), (255, 255, 255)]
SCOOP_COLOURS: list[Colour] = [(250, 190, 200), (245, 240, 205), (180, 230, 190), (120, 70, 45), (200, 180, 240)]
BOARD_COLOURS: list[Colour] = [(40, 40, 45), (185, 140, 90)]  # slate, bamboo
BOWL_COLOURS: list[Colour] = [(250, 250, 250), (200, 60, 60), (70, 110, 170)]
SCOOP_LAYOUTS = {2: [(-13, -6), (13, -6)], 3: [(-18, -4), (18, -4), (0, -30)]}

# Food is drawn on a transparent square layer of side LAYER, kept inside the circle of radius C
# around its centre so that rotating the layer never clips it.
LAYER = 128
C = LAYER // 2
# Scenes are drawn at this multiple of the requested size and downsampled, for smooth edges.
SUPERSAMPLE = 2


def _vary(rng: np.random.Generator, colour: Colour, spread: int = 12) -> Colour:
    """`colour` with each channel shifted by up to `spread`."""
    return tuple(int(v) for v in np.clip(np.add(colour, rng.integers(-spread, spread + 1, 3)), 0, 255))


def _pick(rng: np.random.Generator, colours: Sequence[Colour]) -> Colour:
    return colours[rng.integers(len(colours))]


def _random_point(rng: np.random.Generator, radius: float, centre: Point = (C, C), inner: float = 0.0) -> Point:
    """A point spread uniformly over the ring between `inner` and `radius` around `centre`."""
    r = np.sqrt(rng.uniform(inner**2, radius**2))
    angle = rng.uniform(0, 2 * np.pi)
    return centre[0] + r * np.cos(angle), centre[1] + r * np.sin(angle)


def _disc(draw: ImageDraw.ImageDraw, centre: Point, radius: float, fill: Colour) -> None:
    x, y = centre
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)


def _pizza(layer: Image.Image, rng: np.random.Generator) -> None:
    """A crust rim, melted cheese and scattered pepperoni."""
    draw = ImageDraw.Draw(layer)
    _disc(draw, (C, C), 60, _vary(rng, FOOD_COLOURS["crust"]))
    _disc(draw, (C, C), 51, _vary(rng, FOOD_COLOURS["cheese"]))
    for _ in range(rng.integers(7, 13)):
        _disc(draw, _random_point(rng, 40), rng.uniform(6, 9), _vary(rng, FOOD_COLOURS["pepperoni"]))


def _sushi(layer: Image.Image, rng: np.random.Generator) -> None:
    """A row of maki on a serving board: rice in a nori wrap around a salmon or tamago filling."""
    draw = ImageDraw.Draw(layer)
    draw.rounded_rectangle((C - 58, C - 28, C + 58, C + 28), radius=6, fill=_vary(rng, _pick(rng, BOARD_COLOURS)))
    count, piece, gap = rng.integers(2, 4), 34, 3
    left = C - (count * piece + (count - 1) * gap) / 2
    filling = _vary(rng, FOOD_COLOURS[rng.choice(["salmon", "tamago"])])
    for i in range(count):
        x, y = left + i * (piece + gap), C - piece / 2
        draw.rounded_rectangle((x, y, x + piece, y + piece), radius=9,
                               fill=_vary(rng, FOOD_COLOURS["rice"], 6), outline=FOOD_COLOURS["nori"], width=5)
        draw.rounded_rectangle((x + 12, y + 12, x + piece - 12, y + piece - 12), radius=2, fill=filling)


def _french_fries(layer: Image.Image, rng: np.random.Generator) -> None:
    """A heap of golden sticks, each at its own angle."""
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.integers(18, 28)):
        x, y = _random_point(rng, 32)
        angle, half_length = rng.uniform(0, np.pi), rng.uniform(14, 26)
        dx, dy = half_length * np.cos(angle), half_length * np.sin(angle)
        draw.line((x - dx, y - dy, x + dx, y + dy), fill=_vary(rng, FOOD_COLOURS["fry"], 20),
                  width=int(rng.integers(6, 9)))


def _caesar_salad(layer: Image.Image, rng: np.random.Generator) -> None:
    """Torn leaves in mixed greens, topped with croutons and shaved parmesan."""
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.integers(35, 50)):
        x, y = _random_point(rng, 46)
        rx, ry = rng.uniform(6, 14, 2)
        green = _vary(rng, FOOD_COLOURS[rng.choice(["lettuce", "romaine"])], 25)
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=green)
    for _ in range(rng.integers(5, 9)):
        x, y = _random_point(rng, 40)
        half = rng.uniform(4, 7)
        draw.rectangle((x - half, y - half, x + half, y + half), fill=_vary(rng, FOOD_COLOURS["crouton"]))
    for _ in range(rng.integers(4, 8)):
        x, y = _random_point(rng, 40)
        draw.line((x - 5, y, x + 5, y + 2), fill=_vary(rng, FOOD_COLOURS["parmesan"], 5), width=3)


def _chocolate_cake(layer: Image.Image, rng: np.random.Generator) -> None:
    """A wedge of sponge and cream layers, edged in ganache."""
    wedge = [(C - 55, C), (C + 45, C - 38), (C + 45, C + 38)]
    ganache = _vary(rng, FOOD_COLOURS["ganache"], 8)
    layers = Image.new("RGBA", layer.size, _vary(rng, FOOD_COLOURS["sponge"]))
    layers_draw = ImageDraw.Draw(layers)
    for y in range(C - 26, C + 38, 16):
        layers_draw.rectangle((0, y, LAYER, y + 4), fill=_vary(rng, FOOD_COLOURS["cream"], 8))
    mask = Image.new("L", layer.size)
    ImageDraw.Draw(mask).polygon(wedge, fill=255)
    layer.paste(layers, mask=mask)
    ImageDraw.Draw(layer).polygon(wedge, outline=ganache, width=5)


def _donuts(layer: Image.Image, rng: np.random.Generator) -> None:
    """One or two iced ring doughnuts with sprinkles; the plate shows through the holes."""
    draw = ImageDraw.Draw(layer)
    centres, radius = ([(C, C)], 56) if rng.random() < 0.5 else ([(C - 31, C), (C + 31, C)], 30)
    dough, icing = _vary(rng, FOOD_COLOURS["dough"]), _vary(rng, _pick(rng, ICING_COLOURS))
    for centre in centres:
        _disc(draw, centre, radius, dough)
        _disc(draw, centre, 0.85 * radius, icing)
        for _ in range(rng.integers(6, 12)):
            x, y = _random_point(rng, 0.75 * radius, centre, inner=0.45 * radius)
            draw.line((x - 3, y - 2, x + 3, y + 2), fill=_pick(rng, SPRINKLE_COLOURS), width=2)
        _disc(draw, centre, 0.35 * radius, dough)
        _disc(draw, centre, 0.25 * radius, (0, 0, 0, 0))


def _waffles(layer: Image.Image, rng: np.random.Generator) -> None:
    """A golden square waffle with a grid of darker pockets, sometimes with a pat of butter."""
    draw = ImageDraw.Draw(layer)
    half, cells = 40, 5
    pitch = 2 * half / cells
    draw.rounded_rectangle((C - half, C - half, C + half, C + half), radius=6, fill=_vary(rng, FOOD_COLOURS["waffle"]))
    pocket = _vary(rng, FOOD_COLOURS["waffle_pocket"])
    for i in range(cells):
        for j in range(cells):
            x, y = C - half + i * pitch, C - half + j * pitch
            draw.rectangle((x + 3, y + 3, x + pitch - 3, y + pitch - 3), fill=pocket)
    if rng.random() < 0.5:
        draw.rectangle((C - 9, C - 7, C + 9, C + 7), fill=_vary(rng, FOOD_COLOURS["butter"], 6))


def _steak(layer: Image.Image, rng: np.random.Generator) -> None:
    """A seared oval with a rim of fat and diagonal grill marks."""
    draw = ImageDraw.Draw(layer)
    draw.ellipse((C - 52, C - 36, C + 52, C + 36), fill=_vary(rng, FOOD_COLOURS["steak"]),
                 outline=_vary(rng, FOOD_COLOURS["fat"]), width=5)
    grill = _vary(rng, FOOD_COLOURS["grill"], 8)
    for x in range(C - 24, C + 25, 16):
        draw.line((x - 12, C - 20, x + 12, C + 20), fill=grill, width=5)


def _ice_cream(layer: Image.Image, rng: np.random.Generator) -> None:
    """Two or three pastel scoops on a cone or in a bowl."""
    draw = ImageDraw.Draw(layer)
    if rng.random() < 0.5:
        draw.polygon([(C - 22, C), (C + 22, C), (C, C + 60)], fill=_vary(rng, FOOD_COLOURS["cone"]))
    else:
        draw.chord((C - 46, C - 30, C + 46, C + 56), 0, 180, fill=_vary(rng, _pick(rng, BOWL_COLOURS)))
    for dx, dy in SCOOP_LAYOUTS[int(rng.integers(2, 4))]:
        _disc(draw, (C + dx, C + dy), 20, _vary(rng, _pick(rng, SCOOP_COLOURS), 8))


def _spaghetti_bolognese(layer: Image.Image, rng: np.random.Generator) -> None:
    """A tangle of pale strands under a mound of meat sauce."""
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.integers(30, 45)):
        x, y = _random_point(rng, 30)
        r, start = rng.uniform(10, 26), rng.uniform(0, 360)
        draw.arc((x - r, y - r, x + r, y + r), start, start + rng.uniform(90, 240),
                 fill=_vary(rng, FOOD_COLOURS["pasta"], 15), width=3)
    _disc(draw, _random_point(rng, 8), rng.uniform(18, 24), _vary(rng, FOOD_COLOURS["sauce"]))
    for _ in range(rng.integers(8, 14)):
        _disc(draw, _random_point(rng, 16), rng.uniform(2, 4), _vary(rng, FOOD_COLOURS["mince"]))


DISHES: dict[str, Callable[[Image.Image, np.random.Generator], None]] = {
    "pizza": _pizza,
    "sushi": _sushi,
    "french_fries": _french_fries,
    "caesar_salad": _caesar_salad,
    "chocolate_cake": _chocolate_cake,
    "donuts": _donuts,
    "waffles": _waffles,
    "steak": _steak,
    "ice_cream": _ice_cream,
    "spaghetti_bolognese": _spaghetti_bolognese,
}
CLASSES: tuple[str, ...] = tuple(DISHES)


def render_image(dish: str, rng: np.random.Generator, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """One RGB picture of `dish` (a name in CLASSES), `size` = (width, height) pixels."""
    width, height = size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE
    scene = Image.new("RGB", (width, height), _vary(rng, _pick(rng, TABLE_COLOURS), 20))
    draw = ImageDraw.Draw(scene)

    cx, cy = (0.5 + rng.uniform(-0.08, 0.08, 2)) * (width, height)
    ry = rng.uniform(0.40, 0.48) * height
    rx = ry * rng.uniform(1.0, 1.25)
    plate = _vary(rng, _pick(rng, PLATE_COLOURS), 8)
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=plate)
    well = tuple(int(0.92 * v) for v in plate)
    draw.ellipse((cx - 0.8 * rx, cy - 0.8 * ry, cx + 0.8 * rx, cy + 0.8 * ry), fill=well)

    food = Image.new("RGBA", (LAYER, LAYER))
    DISHES[dish](food, rng)
    side = int(2 * ry * rng.uniform(0.8, 1.0))
    food = food.rotate(rng.uniform(0, 360), resample=Image.BILINEAR).resize((side, side), Image.BILINEAR)
    scene.paste(food, (int(cx - side / 2), int(cy - side / 2)), food)

    pixels = np.asarray(scene.resize(size, Image.BOX), dtype=np.float32)
    pixels = pixels * rng.uniform(0.85, 1.15) + rng.normal(0, 4, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def default_demo_dir() -> Path:
    """$FOOD101HF_CACHE/demo-vN, else $XDG_CACHE_HOME/food101hf/demo-vN, else ~/.cache/food101hf/demo-vN."""
    name = f"demo-v{VERSION}"
    if cache := os.environ.get("FOOD101HF_CACHE"):
        return Path(cache).expanduser() / name
    xdg_cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg_cache) if xdg_cache else Path.home() / ".cache") / "food101hf" / name


def _is_complete(root: Path, params: dict) -> bool:
    try:
        return json.loads((root / MARKER).read_text()) == params
    except (OSError, ValueError):
        return False


def _write_images(folder: Path, params: dict) -> None:
    counts = {"train": params["train_per_class"], "validation": params["val_per_class"]}
    for split_index, split in enumerate(SPLITS):
        for class_index, dish in enumerate(CLASSES):
            class_dir = folder / split / dish
            class_dir.mkdir(parents=True)
            for i in range(counts[split]):
                rng = np.random.default_rng([params["seed"], class_index, split_index, i])
                render_image(dish, rng, tuple(params["size"])).save(class_dir / f"{dish}_{i}.jpg", quality=90)


def make_demo(root: str | os.PathLike, *, train_per_class: int = 80, val_per_class: int = 20,
              size: tuple[int, int] = (96, 72), seed: int = 0) -> Path:
    """Write the demo dataset into `root` (unless it is already there) and return `root`.

    `size` is (width, height). A complete dataset holds a MARKER file recording its parameters;
    one made with the same parameters is reused, one made with others is replaced. A folder that
    is neither empty nor a demo dataset is never overwritten.
    """
    root = Path(root)
    params = {"version": VERSION, "classes": list(CLASSES), "train_per_class": train_per_class,
              "val_per_class": val_per_class, "size": list(size), "seed": seed}
    if _is_complete(root, params):
        return root
    if root.exists() and not (root / MARKER).exists() and any(root.iterdir()):
        raise DemoFolderError(f"{root} is not empty and is not a demo dataset; refusing to overwrite it: pass an "
                              f"empty or new folder")

    # Build next to root and move it into place in one step, so that a run cut short never
    # leaves a folder that looks like a dataset.
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)  # left by an earlier, killed process with our pid
    try:
        staging.mkdir()
        _write_images(staging, params)
        (staging / MARKER).write_text(json.dumps(params, indent=2, allow_nan=False))
        if not _is_complete(root, params):  # another process (say, another rank) may have won the race
            if root.exists():
                shutil.rmtree(root)
            os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = demo_parser().parse_args(argv)
    root = make_demo(args.dir or default_demo_dir(), train_per_class=args.train_per_class,
                     val_per_class=args.val_per_class, seed=args.seed)
    print(root)
    return 0


if __name__ == "__main__":
    run(main)
