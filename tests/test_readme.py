"""README.md runs as written: every fenced code block is executed or validated here, and so
is every packaged preset, example experiment and grid.

- ```python blocks run as scripts with a scratch working directory. Names a snippet leaves to
  the reader (``MyNet``, ``my_arrays``, ``grid``, ``data_fn``, ``train_locally``,
  ``my_trained_model``) come from an explicit preamble in ``PREAMBLES``, keyed by a marker
  string the snippet contains; a snippet without a marker runs as is, so a missing import
  fails. A line ``<expression>  # 3,336,138`` is a claim, executed as
  ``assert <expression> == 3336138``. ``CHECKS`` asserts what each snippet shows (its
  printed output and the objects it builds).
- ```toml blocks are written to a file, loaded with ``load_config`` (every value in the block
  must be in the resolved config) and ``prepare``d: data, model, strategy and its contract.
  A block that is a single section (``[attack]``, ``[lowrank]``) is added to the experiment
  its prose names (``SECTION_BASES``).
- ```bash blocks: every ``flower-suite`` line runs, ``run``/``demo`` with ``--dry-run`` (and a
  scratch ``--output-dir``), ``bench`` with ``--dry-run``, ``list`` for real through the
  installed console script. Other lines (make, python, flwr run, ...) are not run here; each
  kind says in ``NOT_RUN_HERE`` which test covers it; an unknown kind of line fails.
- Every packaged preset and every ``experiments/*.toml`` passes ``flower-suite run X
  --dry-run`` (``load_config`` + ``prepare``); every ``experiments/grids/*.toml`` passes
  ``flower-suite bench X --dry-run`` (every cell validated).

The snippets, TOML blocks and commands run in one module fixture through
``tests/readme_runner.py``: one interpreter imports the package once and forks a process per
job (two at a time), so that each job starts clean without paying 5-10 s of imports. Only
the README's "From Python" snippet starts Ray (a 5-round digits run). The end-to-end
``flower-suite run`` with a run directory is
``tests/simulations/test_cli.py::test_cli_run_prints_table_and_learns``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flower_suite.data.mnist import MNIST_DIR_ENV
from flower_suite.simulations.config import (
    ConfigError,
    config_from_dict,
    load_config,
    presets,
    resolve_experiment,
)
from flower_suite.simulations.engine.runner import backend_config, prepare

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CONSOLE_SCRIPT = Path(sys.executable).with_name("flower-suite")


# --- the README's fenced blocks -----------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # of the opening fence, 1-based
    code: str

    @property
    def id(self) -> str:
        first = next(line for line in self.code.splitlines() if line.strip())
        slug = re.sub(r"[^A-Za-z0-9_.]+", "-", first.split("#")[0].strip())[:40].strip("-")
        return f"L{self.line}-{slug}"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2))
        for m in re.finditer(r"^```(\w*)\n(.*?)^```[ \t]*$", text, re.S | re.M)
    ]


BLOCKS = readme_blocks()


def blocks(lang: str) -> list[Block]:
    return [b for b in BLOCKS if b.lang == lang]


def test_readme_blocks_are_python_toml_or_bash() -> None:
    """Every fence names a language this test knows how to run (none is silently skipped)."""
    assert len(BLOCKS) >= 20
    assert {b.lang for b in BLOCKS} == {"python", "toml", "bash"}, [
        (b.line, b.lang) for b in BLOCKS if b.lang not in ("python", "toml", "bash")
    ]


def test_markers_name_exactly_one_snippet() -> None:
    """A preamble or check whose marker no longer matches exactly one block would be dead."""
    for marker in [*PREAMBLES, *CHECKS, *TOML_BLOCKS_BY_ROLE.values()]:
        hits = [b.line for b in BLOCKS if marker in b.code]
        assert len(hits) == 1, f"marker {marker!r} matches README blocks at lines {hits}"


# --- python --------------------------------------------------------------------------------

# Names the snippets leave to the reader, defined as little as makes each snippet run.
PREAMBLES: dict[str, str] = {
    # `make_client_app(lambda ctx: MyNet(), ...)`: any torch model and an ArrayDataset.
    "ClientData(train=my_arrays)": """
        from flower_suite.data import load_digits_split
        from flower_suite.models import DigitsCNN as MyNet

        my_arrays, _ = load_digits_split()
    """,
    # Krum's `strategy.start(grid=grid, ...)`: 20 in-process nodes serving digits shards.
    "strategy.start(grid=grid, initial_arrays=arrays": """
        import numpy as np
        from flwr.app import ArrayRecord
        from flower_suite.clients import ClientData, make_client_app
        from flower_suite.data import load_digits_split
        from flower_suite.models import DigitsCNN
        from flower_suite.simulations.engine.inprocess import InProcessGrid

        _train, _test = load_digits_split()
        _shards = np.array_split(np.random.default_rng(0).permutation(len(_train)), 20)
        _tests = np.array_split(np.arange(len(_test)), 20)

        def _data(ctx):
            p = ctx.node_config["partition-id"]
            return ClientData(train=_train.subset(_shards[p]), test=_test.subset(_tests[p]))

        grid = InProcessGrid(make_client_app(lambda ctx: DigitsCNN(), _data), num_nodes=20)
        arrays = ArrayRecord(DigitsCNN().state_dict())
        # inside a ServerApp, Flower's run stamps each Message with its run id; here, this
        from flower_suite.flower_compat import message_identity
        _identity = message_identity()
        _identity.__enter__()
    """,
    # PUFFERFISH's `factorize(my_trained_model, ..., keep_full_rank=["encoder.0"])`.
    "factorize(my_trained_model": """
        from torch import nn

        my_trained_model = nn.Sequential()
        my_trained_model.add_module("encoder", nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ))
        my_trained_model.add_module("head", nn.Sequential(
            nn.Flatten(), nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 10),
        ))
    """,
    # `LowRankWarmup(FedAvg(), ..., model_fn=MyNet, ...)`: any model class.
    "model_fn=MyNet": """
        from flower_suite.models import DigitsCNN as MyNet
    """,
    # FedMA's ServerApp/ClientApp: `data_fn` gives each node a digits shard.
    "add_fedma_handlers(client_app": """
        import numpy as np
        from flower_suite.clients import ClientData
        from flower_suite.data import load_digits_split

        _train, _test = load_digits_split()
        _shards = np.array_split(np.random.default_rng(0).permutation(len(_train)), 4)
        _tests = np.array_split(np.arange(len(_test)), 4)

        def data_fn(ctx):
            p = ctx.node_config["partition-id"]
            return ClientData(train=_train.subset(_shards[p]), test=_test.subset(_tests[p]))
    """,
    # Matching alone: `train_locally(DigitsCNN())` trains a model on a shard of its own.
    "train_locally(DigitsCNN())": """
        import itertools
        import numpy as np
        from flower_suite.data import load_digits_split
        from flower_suite.training import TrainConfig, train

        _train, _ = load_digits_split()
        _shards = iter(np.array_split(np.random.default_rng(0).permutation(len(_train)), 4))
        _seeds = itertools.count()

        def train_locally(model):
            shard = _train.subset(next(_shards))
            train(model, shard, TrainConfig(local_epochs=2), seed=next(_seeds))
            return model
    """,
}

# What each snippet shows, asserted after it ran (``printed``: what the snippet printed).
CHECKS: dict[str, str] = {
    "SecureRobust(FedMedian(), group_size=4)": """
        from flower_suite.strategies.robust_rules import FedMedian as Median

        assert isinstance(strategy, SecureRobust) and strategy.group_size == 4
        assert isinstance(strategy.strategy, Median)
        assert isinstance(app, ClientApp)
    """,
    'choose_group_size(40, 4, rule="median")': """
        import pytest

        assert choose_group_size(40, 4, rule="median") == 4
        assert choose_group_size(100, 2, rule="krum") == 14
        assert tolerated_byzantine(40, 4, rule="krum") == 3
        with pytest.raises(ValueError, match="at most 3"):
            choose_group_size(40, 4, rule="krum", min_group_size=5)
    """,
    "run_experiment(config, on_round=": """
        from pathlib import Path

        rows = [line.split() for line in printed.splitlines()]
        assert [int(r[0]) for r in rows[:-1]] == [0, 1, 2, 3, 4, 5], rows
        assert float(rows[-1][0]) == result.final["test-acc"] > 0.85, rows[-1]
        run_dir = Path.cwd() / rows[-1][1]  # under the working directory's runs/
        assert run_dir.parent == Path.cwd() / "runs", run_dir
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 6
    """,
    "ClientData(train=my_arrays)": """
        from flwr.app import ArrayRecord
        from flwr.clientapp import ClientApp
        from flower_suite.simulations.engine.inprocess import InProcessGrid
        from flower_suite.strategies import FedAvg

        from flower_suite.flower_compat import message_identity

        assert isinstance(app, ClientApp)
        # the app trains: one FedAvg round over two in-process nodes (outside a Flower run,
        # message_identity stands in for the run id a ServerApp's messages carry)
        with message_identity():
            trained = FedAvg(fraction_evaluate=0.0).start(
                grid=InProcessGrid(app, num_nodes=2),
                initial_arrays=ArrayRecord(MyNet().state_dict()),
                num_rounds=1,
            )
        assert trained.train_metrics_clientapp[1]["train-loss"] > 0
    """,
    "print(strategy.records[3].selected)": """
        picked = strategy.records[3].selected
        assert len(picked) == 1 and picked[0] in set(grid.get_node_ids()), picked
        assert printed.strip() == str(picked), printed
    """,
    "result = bulyan(updates": """
        assert tuple(result.aggregate.shape) == (1000,)
        assert len(result.selected) == 20 - 2 * 4, result.selected  # n - 2f by iterated Krum
    """,
    "flame = FLAME(": """
        assert isinstance(strategy, NormClipping) and isinstance(flame, FLAME)
    """,
    "strategy = SecAggPlus(": """
        from flwr.clientapp import ClientApp

        assert isinstance(strategy, SecAggPlus) and isinstance(app, ClientApp)
    """,
    "factorize(my_trained_model": """
        from torch import nn

        assert CLAIMS == 1  # count_parameters(low) == 3,336,138 was asserted
        assert isinstance(mine.get_submodule("encoder.0"), nn.Conv2d)  # kept full-rank
        assert count_parameters(mine) < count_parameters(my_trained_model)
    """,
    "LowRankWarmup(FedAvg()": """
        assert isinstance(strategy, LowRankWarmup)
    """,
    "add_fedma_handlers(client_app": r"""
        import contextlib, io, re
        from flwr.app import Context, RecordDict
        from flower_suite.flower_compat import message_identity
        from flower_suite.simulations.engine.inprocess import InProcessGrid

        # the ServerApp's main, as written: 3 FedMA rounds over 4 in-process nodes
        # (message_identity: the run id Flower's run would give the server's messages)
        context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
        shown = io.StringIO()
        with contextlib.redirect_stdout(shown), message_identity():
            main(InProcessGrid(client_app, num_nodes=4), context)
        print(shown.getvalue())
        # print(strategy.width_history, strategy.bytes_history): {round: widths} {round: bytes}
        pattern = r"^\{1: \[(\d+), (\d+), (\d+)\], 2: .*, 3: .*\} \{1: \{'sent': \d+"
        history = re.match(pattern, shown.getvalue())
        assert history, shown.getvalue()
        assert all(int(w) >= base for w, base in zip(history.groups(), (16, 32, 64))), history
    """,
    "print(result.widths)": """
        import torch

        widths = result.widths
        assert printed.strip() == str(widths), printed
        assert len(widths) == 3, widths  # "e.g. [22, 41, 73]": conv, conv, hidden linear
        assert all(w >= base for w, base in zip(widths, (16, 32, 64), strict=True)), widths
        assert global_model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    """,
    "class QuorumFedAvg(FedAvg)": """
        # the comment after print(err)
        assert printed.startswith("clients_per_round: QuorumFedAvg needs at least 8"), printed
    """,
    'COMPRESSORS.create("atomo_spectral", budget=2)': """
        import torch

        probabilities, size_line = printed.strip().splitlines()
        assert "tensor([1.0000, 0.5000, 0.5000]" in probabilities, probabilities
        sent, dense = int(size_line.split()[0]), 4 * (64 * 512 + 64)
        assert size_line.endswith(f"bytes instead of {dense}") and sent < dense / 10, size_line
        assert decoded.keys() == update.keys()
        assert all(decoded[k].shape == update[k].shape for k in update)
        assert all(bool(torch.isfinite(decoded[k]).all()) for k in update)
    """,
    "make_cyclic_code(num_nodes=15, max_adversaries=3)": """
        assert printed.strip() == "[2, 7, 11] True", printed  # the comment on the last line
    """,
}

SIMULATION = ("run_experiment(",)  # snippets that start Ray (run first: they take longest)

_CLAIM = re.compile(r"^(?P<expr>[A-Za-z_][^#=]*?)\s+#\s*(?P<number>\d[\d,]*)\s*$")


def with_claims_asserted(code: str) -> tuple[str, int]:
    """``expr  # 3,336,138`` lines become ``assert expr == 3336138``; returns (code, count)."""
    lines, claims = [], 0
    for line in code.splitlines():
        match = _CLAIM.match(line)
        if match:
            expr, number = match["expr"].strip(), int(match["number"].replace(",", ""))
            line = f"assert ({expr}) == {number}, f'{expr} = {{{expr}}}, README says {number}'"
            claims += 1
        lines.append(line)
    return "\n".join(lines) + "\n", claims


def _marked(code: str, table: Mapping[str, str]) -> list[str]:
    return [textwrap.dedent(value) for marker, value in table.items() if marker in code]


def python_job_code(block: Block) -> str:
    """Preamble, then the snippet (its prints captured as ``printed``), then its check."""
    preambles, checks = _marked(block.code, PREAMBLES), _marked(block.code, CHECKS)
    assert len(preambles) <= 1, f"README.md:{block.line}: more than one preamble marker"
    assert len(checks) == 1, f"README.md:{block.line}: give the snippet one entry in CHECKS"
    snippet, claims = with_claims_asserted(block.code)
    return "\n".join(
        [
            "import contextlib as _contextlib, io as _io",
            *preambles,
            f"CLAIMS = {claims}",
            "_printed = _io.StringIO()",
            "with _contextlib.redirect_stdout(_printed):",
            f"    exec(compile({snippet!r}, 'README.md:{block.line}', 'exec'), globals())",
            "printed = _printed.getvalue()",
            "print(printed, end='')",
            checks[0],
        ]
    )


# --- toml ----------------------------------------------------------------------------------

# A block that is a single table, like "Add an [attack] table to any experiment", is added to
# the experiment its prose points to, replacing that experiment's table of the same name.
SECTION_BASES = {
    "attack": REPO / "experiments" / "digits_edge.toml",  # "experiments/digits_edge.toml is ..."
    "lowrank": "digits_fedavg",  # "Add a [lowrank] section to any experiment"
}
# The README's `flower-suite run my_experiment.toml ...` is its experiment block below it.
TOML_BLOCKS_BY_ROLE = {"my_experiment.toml": 'name = "digits-fedprox"'}


def _section_only(raw: Mapping[str, Any]) -> str | None:
    """The section's name when the block is exactly one table, else None (a whole config)."""
    if len(raw) == 1:
        ((key, value),) = raw.items()
        if isinstance(value, dict):
            return key
    return None


def toml_block_raw(block: Block) -> dict[str, Any]:
    """The config the block stands for, as parsed TOML (a section merged into its base)."""
    raw = tomllib.loads(block.code)
    section = _section_only(raw)
    if section is None:
        return raw
    assert section in SECTION_BASES, f"README.md:{block.line}: add [{section}] to SECTION_BASES"
    merged = tomllib.loads(resolve_experiment(SECTION_BASES[section]).read_text())
    merged[section] = raw[section]
    return merged


def toml_job_code(block: Block) -> str:
    """Load the block from a file (or its section merged into its base), then prepare."""
    load = (
        f"load_config({f'L{block.line}.toml'!r})"
        if _section_only(tomllib.loads(block.code)) is None
        else f"config_from_dict(json.loads({json.dumps(toml_block_raw(block))!r}))"
    )
    return textwrap.dedent(
        f"""
        import json
        from flower_suite.simulations.config import config_from_dict, load_config
        from flower_suite.simulations.engine.runner import prepare

        task = prepare({load})
        print("prepared", task.config.name, task.num_partitions, "partitions")
        """
    )


def _normalized(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_normalized(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _normalized(v) for k, v in value.items()}
    return value


def assert_block_in_config(
    raw: Mapping[str, Any], resolved: Mapping[str, Any], where: str = ""
) -> None:
    """Every value the block sets is the resolved config's (nothing dropped or renamed)."""
    for key, value in raw.items():
        assert key in resolved, f"{where}{key} missing from the resolved config"
        if isinstance(value, dict) and value and key != "params":
            assert_block_in_config(value, resolved[key], f"{where}{key}.")
        else:
            assert _normalized(resolved[key]) == _normalized(value), f"{where}{key}"


# --- bash ----------------------------------------------------------------------------------

# Lines of the README's bash blocks not run here, by their first word, and what covers them.
NOT_RUN_HERE = {
    # `make demo` runs `flower-suite demo` (run below); `make test` / `make fuzz` are the suite.
    "make": "Makefile targets: the test suite itself, or commands run here and in test_cli.py",
    # `python benchmarks/...`: minutes of measurements; their results are benchmarks/RESULTS.md.
    "python": "benchmark scripts (minutes); measured figures are in benchmarks/RESULTS.md",
    # The `flwr run` block (export, flwr run, kill) is scripts/flwr_run_local.sh, which
    # tests/simulations/test_cli.py::test_flwr_run_matches_the_runner runs (a real SuperLink);
    # test_flwr_run_block_matches_the_script below checks the block against the script.
    "export": "environment of the `flwr run` block (scripts/flwr_run_local.sh)",
    "flwr": "tests/simulations/test_cli.py::test_flwr_run_matches_the_runner",
    "kill": "stops the SuperLink of the `flwr run` block by PID (scripts/flwr_run_local.sh)",
    # The "Deploying the app on a real federation" block: tests/deployment/federation.py
    # starts these processes on loopback (insecure and TLS) for the deployment suite.
    "flower-superlink": "tests/deployment/test_deployment_faults.py (a real SuperLink)",
    "flower-supernode": "tests/deployment/test_deployment_faults.py (real SuperNodes)",
}


def bash_lines(code: str) -> Iterator[list[str]]:
    """Each command of a bash block as argv (continuations joined, comments dropped)."""
    for line in code.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            yield argv


def readme_commands() -> dict[tuple[str, ...], str]:
    """The README's flower-suite commands as they run here -> the README's line."""
    commands: dict[tuple[str, ...], str] = {}
    for block in blocks("bash"):
        for argv in bash_lines(block.code):
            if argv[0] != "flower-suite":
                continue
            command, args = argv[1], list(argv[2:])
            if command in ("run", "demo"):
                args += ["--dry-run", "--output-dir", "tmp-runs"]
            elif command == "bench":
                if "--dry-run" not in args:
                    args.append("--dry-run")
                if "--output" not in args:
                    args += ["--output", "tmp-bench"]
            elif command != "list":
                raise AssertionError(f"README.md:{block.line}: unknown command {argv}")
            commands.setdefault((command, *args), f"README.md:{block.line}: {shlex.join(argv)}")
    return commands


README_COMMANDS = readme_commands()

# --- presets, experiments, grids -----------------------------------------------------------

EXPERIMENTS = sorted(p.name for p in (REPO / "experiments").glob("*.toml"))
GRIDS = sorted(p.name for p in (REPO / "experiments" / "grids").glob("*.toml"))
NEEDS_MNIST = {"mnist_lenet.toml"}  # data.dataset = "mnist": local IDX files


def experiment_argv(experiment: str) -> tuple[str, ...]:
    path = experiment if experiment in presets() else f"experiments/{experiment}"
    return ("run", path, "--dry-run", "--output-dir", "tmp-runs")


def grid_argv(grid: str) -> tuple[str, ...]:
    return ("bench", f"experiments/grids/{grid}", "--dry-run", "--output", "tmp-bench")


def write_fake_mnist(directory: Path, train: int = 2000, test: int = 200) -> Path:
    """Tiny MNIST-format IDX files (random 28x28 images, labels 0-9) for path resolution."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, data in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 0x08, data.ndim]) + b"".join(
                int(d).to_bytes(4, "big") for d in data.shape
            )
            (directory / f"{prefix}-{kind}-ubyte").write_bytes(header + data.tobytes())
    return directory


# --- running everything once ---------------------------------------------------------------


@dataclass
class Results:
    by_id: dict[str, dict[str, Any]]
    cwd: Path

    def __getitem__(self, job_id: str) -> dict[str, Any]:
        return self.by_id[job_id]

    def ok(self, job_id: str, expected: int = 0) -> str:
        result = self.by_id[job_id]
        output = result["output"]
        assert result["returncode"] == expected, f"{job_id}\n{output[-4000:]}"
        return str(output)


def python_job_id(block: Block) -> str:
    return f"python {block.id}"


def toml_job_id(block: Block) -> str:
    return f"toml {block.id}"


def cli_job_id(argv: tuple[str, ...]) -> str:
    return "flower-suite " + shlex.join(argv)


def job_id_of(item: pytest.Item) -> str | None:
    """The job a test of this module reads from ``results`` (None: it reads none)."""
    params = getattr(item, "callspec", None)
    params = params.params if params is not None else {}
    name = getattr(item, "originalname", item.name)
    if name in ("test_python_snippet", "test_toml_block_is_a_valid_experiment"):
        block = params["block"]
        return python_job_id(block) if block.lang == "python" else toml_job_id(block)
    if name == "test_readme_command":
        return cli_job_id(params["argv"])
    if name == "test_experiment_dry_run":
        return cli_job_id(experiment_argv(params["experiment"]))
    if name == "test_grid_dry_run":
        return cli_job_id(grid_argv(params["grid"]))
    return None


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Results:
    """The jobs of this module's selected tests, run once: the python snippets (Ray first),
    the TOML blocks, the README's commands and every preset, experiment and grid, deduplicated.

    Commands run in a scratch directory holding ``experiments/`` (a link to the repository's)
    and ``my_experiment.toml``; the MNIST experiment reads ``$FLOWER_SUITE_MNIST_DIR``,
    pointed at MNIST-format files written here (``test_mnist_*`` cover a missing directory).
    """
    cwd = tmp_path_factory.mktemp("readme")
    (cwd / "experiments").symlink_to(REPO / "experiments", target_is_directory=True)
    role = TOML_BLOCKS_BY_ROLE["my_experiment.toml"]
    (my_block,) = [b for b in blocks("toml") if role in b.code]
    (cwd / "my_experiment.toml").write_text(my_block.code)
    fake_mnist = write_fake_mnist(cwd / "fake-mnist")

    jobs: list[dict[str, Any]] = []
    python = sorted(blocks("python"), key=lambda b: not any(s in b.code for s in SIMULATION))
    for block in python:
        job_cwd = cwd / f"python-L{block.line}"
        job_cwd.mkdir()
        jobs.append(
            {
                "id": python_job_id(block),
                "code": python_job_code(block),
                "filename": f"<README.md:{block.line} and its preamble/check>",
                "cwd": str(job_cwd),
            }
        )
    for block in blocks("toml"):
        (cwd / f"L{block.line}.toml").write_text(block.code)
        jobs.append({"id": toml_job_id(block), "code": toml_job_code(block), "cwd": str(cwd)})
    commands = [argv for argv in README_COMMANDS if argv != ("list",)]
    commands += [experiment_argv(e) for e in [*presets(), *EXPERIMENTS]]
    commands += [grid_argv(g) for g in GRIDS]
    for argv in dict.fromkeys(commands):
        env = {MNIST_DIR_ENV: str(fake_mnist) if "mnist" in " ".join(argv) else None}
        jobs.append({"id": cli_job_id(argv), "argv": list(argv), "cwd": str(cwd), "env": env})

    module = sys.modules[__name__]
    wanted = {job_id_of(i) for i in request.session.items if getattr(i, "module", None) is module}
    jobs = [job for job in jobs if job["id"] in wanted]  # `-k`, `-m "not simulation"`, ...
    uses_edge = any("digits_edge" in json.dumps(job) for job in jobs)
    request = {"jobs": jobs, "warm_digits_edge_seeds": [0] if uses_edge else [], "parallel": 2}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("readme_runner.py"))],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        # one thread per process: two jobs at a time on a loaded machine; wide lines
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"},
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    by_id = {r["id"]: r for r in json.loads(proc.stdout.strip().splitlines()[-1])}
    slowest = sorted(by_id.values(), key=lambda r: -r["seconds"])[:8]
    print("slowest jobs:", *(f"{r['seconds']:7.1f} s  {r['id']}" for r in slowest), sep="\n")
    return Results(by_id, cwd)


# --- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(
            b,
            id=b.id,
            marks=[pytest.mark.simulation] if any(s in b.code for s in SIMULATION) else [],
        )
        for b in blocks("python")
    ],
)
def test_python_snippet(block: Block, results: Results) -> None:
    """The snippet runs (after its preamble, if any) and does what it shows."""
    results.ok(python_job_id(block))


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in blocks("toml")])
def test_toml_block_is_a_valid_experiment(block: Block, results: Results) -> None:
    """The block loads with every value it sets, and prepares (data, model, strategy)."""
    raw = toml_block_raw(block)
    config = config_from_dict(raw)
    assert_block_in_config(tomllib.loads(block.code), config.to_dict())
    assert f"prepared {config.name}" in results.ok(toml_job_id(block))
    if _section_only(tomllib.loads(block.code)) == "lowrank":  # cites pufferfish_digits.toml
        cited = load_config(REPO / "experiments" / "pufferfish_digits.toml").lowrank
        assert config.lowrank == cited


def test_bash_lines_are_run_or_covered_elsewhere() -> None:
    """Every bash line is a flower-suite command (run here) or of a kind covered elsewhere."""
    kinds = {argv[0] for b in blocks("bash") for argv in bash_lines(b.code)}
    assert kinds - {"flower-suite"} <= set(NOT_RUN_HERE), kinds - set(NOT_RUN_HERE)
    assert {argv[0] for argv in README_COMMANDS} == {"run", "demo", "list", "bench"}
    test_cli = (REPO / "tests" / "simulations" / "test_cli.py").read_text()
    assert "def test_flwr_run_matches_the_runner" in test_cli
    assert "scripts/flwr_run_local.sh" in test_cli


def test_flwr_run_block_matches_the_script() -> None:
    """The README's "which does:" block is what scripts/flwr_run_local.sh runs."""
    script = (REPO / "scripts" / "flwr_run_local.sh").read_text()
    (block,) = [b for b in blocks("bash") if "flwr run ." in b.code]
    for argv in bash_lines(block.code):
        if argv[0] == "export":
            for name in (a.split("=")[0] for a in argv[1:] if "=" in a):
                assert f"export {name}=" in script, name
        elif argv[0] == "flwr":
            assert "flwr run . --stream" in script
            assert "--federation-config" in script and "--run-config" in script
        else:
            assert argv[0] == "kill"
            assert 'ss -Hltnp "sport = :${port}"' in script
            assert "pkill" not in script  # by PID, never by name


@pytest.mark.parametrize(
    "argv", [pytest.param(a, id=cli_job_id(a)) for a in README_COMMANDS if a != ("list",)]
)
def test_readme_command(argv: tuple[str, ...], results: Results) -> None:
    """The README's command validates: run/demo prepared before Ray, bench every cell."""
    out = results.ok(cli_job_id(argv))
    assert "Traceback" not in out, README_COMMANDS[argv]
    if argv[0] == "bench":
        assert re.search(r"^\d+ to run, 0 finished earlier", out, re.M), out[-2000:]
        return
    assert "dry run: the config is valid" in out
    for i, arg in enumerate(argv[:-1]):
        if arg == "--set":
            key, value = argv[i + 1].split("=", 1)
            if key in ("rounds", "strategy.name"):
                assert f"{key.split('.')[0]}: {value}" in out, (README_COMMANDS[argv], out)


def test_readme_list_runs_the_console_script() -> None:
    """``flower-suite list`` through the installed entry point, in a fresh process."""
    assert ("list",) in README_COMMANDS
    proc = subprocess.run(
        [str(CONSOLE_SCRIPT), "list"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    found = {
        title: {name.strip() for name in names.split(",")}
        for title, names in re.findall(r"^([a-z ]+): (.*)$", proc.stdout, re.M)
    }
    assert "digits_fedavg" in found["presets"]
    assert {"digits", "digits_edge", "mnist"} <= found["data sets"]
    assert {"digits_cnn", "resnet18", "lenet"} <= found["models"]
    assert {"krum", "fedprox", "detox"} <= found["strategies"]


@pytest.mark.parametrize("experiment", [*presets(), *EXPERIMENTS])
def test_experiment_dry_run(experiment: str, results: Results) -> None:
    """Every packaged preset and example experiment passes ``flower-suite run X --dry-run``
    (the MNIST one with ``$FLOWER_SUITE_MNIST_DIR`` set, see ``results``); a GPU experiment
    on a machine with fewer CUDA devices than it asks for is refused naming the field."""
    path = experiment if experiment in presets() else REPO / "experiments" / experiment
    config = load_config(path)
    if config.resources.num_gpus > torch.cuda.device_count():
        out = results.ok(cli_job_id(experiment_argv(experiment)), expected=2)
        assert out.startswith("config error: resources.num_gpus:"), out
        return
    out = results.ok(cli_job_id(experiment_argv(experiment)))
    assert f"experiment: {config.name} (seed {config.seed})" in out
    assert f"rounds: {config.rounds}\n" in out
    if config.resources.num_gpus:
        assert f"resources: {config.resources.num_gpus} GPU per client" in out


@pytest.mark.parametrize("grid", GRIDS)
def test_grid_dry_run(grid: str, results: Results) -> None:
    """Every grid validates all its cells (``flower-suite bench GRID --dry-run``)."""
    out = results.ok(cli_job_id(grid_argv(grid)))
    raw = tomllib.loads((REPO / "experiments" / "grids" / grid).read_text())
    cells = len(raw.get("seeds", [0]))
    for levels in raw.get("axis", {}).values():
        cells *= len(levels)
    assert re.search(rf"^{cells} to run, 0 finished earlier", out, re.M), out[-2000:]


def test_every_grid_and_experiment_is_checked() -> None:
    """Nothing in experiments/ escapes the checks above (a new file is picked up by glob)."""
    assert "digits_edge.toml" in EXPERIMENTS and "robust_digits.toml" in GRIDS
    assert "digits_fedavg" in presets()
    assert set(EXPERIMENTS) >= NEEDS_MNIST
    with pytest.raises(ConfigError):  # a typo is an error, not a silently empty glob
        load_config("no_such_preset")


def test_mnist_data_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``data.path`` wins over the environment and resolves against the working directory
    (as the experiment's comment ``--set data.path='../shared/data/mnist'`` assumes)."""
    write_fake_mnist(tmp_path / "here" / "mnist")
    monkeypatch.chdir(tmp_path / "here")
    monkeypatch.setenv(MNIST_DIR_ENV, str(tmp_path / "nowhere"))
    config = load_config(REPO / "experiments" / "mnist_lenet.toml", ["data.path='mnist'"])
    train, _ = prepare(config).data()
    assert len(train) == 2000


def test_mnist_without_data_exits_2_naming_data_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No ``data.path`` and no ``$FLOWER_SUITE_MNIST_DIR``: exit 2, ``data.path`` named,
    no traceback, before Ray."""
    from flower_suite.simulations.cli import main

    monkeypatch.delenv(MNIST_DIR_ENV, raising=False)
    code = main(["run", str(REPO / "experiments" / "mnist_lenet.toml"), "--dry-run"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out.startswith("config error:") and "data.path" in captured.out
    assert "Traceback" not in captured.out + captured.err


def test_mnist_without_data_is_a_config_error_on_data_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MNIST_DIR_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"^data\.path: "):
        prepare(load_config(REPO / "experiments" / "mnist_lenet.toml"))


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if "gpu" in e])
def test_gpu_experiments_ask_ray_for_a_gpu_share(experiment: str) -> None:
    """Each client asks Ray for its GPU share, and CUDA is used when Ray gives one; without
    enough CUDA devices ``prepare`` refuses the run (``test_experiment_dry_run``: Ray would
    start no client and the run would never end). The files' advice for machines without a
    GPU, ``resources.num_gpus = 0``, pins the clients to the CPU."""
    path = REPO / "experiments" / experiment
    config = load_config(path)
    assert config.resources.num_gpus > 0
    assert backend_config(config)["client_resources"]["num_gpus"] == config.resources.num_gpus
    assert "num_gpus = 0" in path.read_text()  # the advice is in the file
    cpu = load_config(path, ["resources.num_gpus=0"])
    assert backend_config(cpu)["client_resources"]["num_gpus"] == 0
