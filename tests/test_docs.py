"""The docs stay true to the code: every command they show still parses, and every link resolves.

Reads README.md and docs/*.md. In their shell code blocks, `python -m fruitres.<entry> overrides...` of a
Hydra entry point must compose with Hydra's compose API (what `--cfg job` checks, without a process each);
`python -m fruitres.<module> args...` of an argparse module, and `python <script>.py args...`, must parse with
the module's own parser; `make <target> ...` must name a Makefile target, and the commands `make -n` prints
for it are checked in turn. Placeholders (`<time>`, `...`, `$VAR`) are filled with a dummy value. Every
relative link and image resolves, anchors included, and so do the `docs/*.md#anchor` pointers in configs
and code. The config table and the layout in the guides name every config group and module there is.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
HYDRA_ENTRY_POINTS = {path.stem for path in CONF.glob("*.yaml")}  # train, eval, predict, export, lr_find
READ_BEFORE_HYDRA = ("resume=",)  # fruitres.train reads these from argv before Hydra composes
HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p"}
HYDRA_FLAGS = {"-m", "--multirun", "--resolve"}
HYDRA_HELP_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i"}
DUMMY = "x"
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
DOC_POINTER = re.compile(r"docs/([\w.-]+\.md)(?:#([\w-]+))?")


@dataclass(frozen=True)
class Command:
    doc: Path
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}: {self.text}"


# --- reading the docs ---------------------------------------------------------------------------------------


def code_blocks(doc: Path) -> list[tuple[int, str, list[str]]]:
    """(line of the first code line, language, lines) of each fenced code block."""
    blocks, language, start, lines, fence = [], None, 0, [], None
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        stripped = line.strip()
        if fence is None and (stripped.startswith("```") or stripped.startswith("~~~")):
            fence, language, start, lines = stripped[:3], stripped[3:].strip().lower(), number + 1, []
        elif fence is not None and stripped.startswith(fence):
            blocks.append((start, language, lines))
            fence = None
        elif fence is not None:
            lines.append(line)
    return blocks


def prose_lines(doc: Path) -> list[str]:
    """The lines of `doc` outside fenced code blocks."""
    inside, lines = None, []
    for line in doc.read_text().splitlines():
        stripped = line.strip()
        if inside is None and (stripped.startswith("```") or stripped.startswith("~~~")):
            inside = stripped[:3]
        elif inside is not None and stripped.startswith(inside):
            inside = None
        elif inside is None:
            lines.append(line)
    return lines


def without_placeholders(line: str) -> str:
    """`line` with each `<...>` placeholder (`<time>`, `<that run's checkpoint>`) replaced by a dummy word."""
    return re.sub(r"<[^<>\s][^<>]*>", DUMMY, line)


def without_comment(line: str) -> str:
    """`line` up to a shell comment: a `#` at the start of a word, outside quotes."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def logical_lines(lines: list[str], first_line: int, console: bool = False) -> list[tuple[int, str]]:
    """Shell lines with their backslash continuations joined (and a console's `$ ` prompt dropped)."""
    joined, pending, start = [], "", first_line
    for number, line in enumerate(lines, first_line):
        if console:
            if not pending and not line.startswith("$ "):
                continue  # output, not a command
            line = line.removeprefix("$ ") if not pending else line
        if not pending:
            start = number
        text = without_comment(without_placeholders(line)).rstrip()
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        joined.append((start, pending + text))
        pending = ""
    if pending:
        joined.append((start, pending))
    return joined


def substitutions(line: str) -> tuple[str, list[str]]:
    """`line` with each `$(...)` replaced by a dummy word, and the commands those held."""
    inner = []

    def take(match: re.Match) -> str:
        inner.append(match.group(1))
        return DUMMY

    while "$(" in line:
        replaced = re.sub(r"\$\(([^()]*)\)", take, line)
        if replaced == line:
            break
        line = replaced
    return line, inner


def simple_commands(line: str) -> list[list[str]]:
    """The word lists of the simple commands in one shell line: split at &&, ||, ;, |, and inside $(...)."""
    line, inner = substitutions(without_placeholders(line))
    commands = []
    for text in [line, *inner]:
        lexer = shlex.shlex(text, posix=True, punctuation_chars="();|&")
        lexer.whitespace_split = True
        lexer.commenters = ""
        words: list[str] = []
        for token in lexer:
            if token in SEPARATORS:
                commands.append(words)
                words = []
            else:
                words.append(token)
        commands.append(words)
    return [words for words in commands if words]


def doc_commands() -> list[Command]:
    """Every command line in the shell code blocks of the README and the guides."""
    commands = []
    for doc in DOCS:
        for first_line, language, lines in code_blocks(doc):
            if language in SHELL_LANGUAGES:
                for number, text in logical_lines(lines, first_line, console=language == "console"):
                    if text.strip():
                        commands.append(Command(doc, number, text.strip()))
    return commands


# --- placeholders -------------------------------------------------------------------------------------------


def fill(word: str) -> str | None:
    """A doc's word with its placeholders filled (`...`, `$VAR`); None drops a lone `...`."""
    if word in {"...", "…"}:  # "and so on"
        return None
    word = word.replace("...", DUMMY).replace("…", DUMMY)
    word = re.sub(r"\$\{?PWD\}?", str(REPO), word)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", DUMMY, word)


def filled(words: list[str]) -> list[str]:
    return [word for word in map(fill, words) if word is not None]


def strip_prefixes(words: list[str]) -> list[str]:
    """The command itself: without leading VAR=value assignments, `time`, `nice -n N`, `env`."""
    while words:
        if ENV_ASSIGNMENT.match(words[0]) or words[0] in {"time", "env", "exec"}:
            words = words[1:]
        elif words[0] == "nice":
            words = words[3:] if len(words) > 2 and words[1] == "-n" else words[1:]
        else:
            return words
    return words


# --- checking one command -----------------------------------------------------------------------------------


class Parsed(Exception):
    """Raised in place of running a module once its parser accepted the arguments."""


def hydra_overrides(entry: str, words: list[str]) -> tuple[list[str], bool]:
    """The overrides of a Hydra entry point's command line (flags dropped), and whether it asked for help."""
    overrides, asked_help, skip = [], False, False
    for word in words:
        if skip:
            skip = False
        elif word in HYDRA_FLAGS_WITH_VALUE:
            skip = True
        elif word in HYDRA_FLAGS:
            continue
        elif word in HYDRA_HELP_FLAGS:
            asked_help = True
        elif word.startswith("-"):
            raise AssertionError(f"fruitres.{entry}: {word} is not a Hydra flag this test knows")
        elif (entry == "train" and word.startswith(READ_BEFORE_HYDRA)) or word == DUMMY:
            continue  # read before Hydra composes; a placeholder for more overrides (`<option>`)
        else:
            overrides.append(word)
    return overrides, asked_help


def is_group(key: str) -> bool:
    """Whether an override's key names a config group (a folder of conf/), whose every option must exist."""
    return (CONF / key.lstrip("+~").replace(".", "/")).is_dir()


def override_variants(overrides: list[str]) -> list[list[str]]:
    """Command lines that together try every option a sweep names: the first values, then one group sweep's
    other options at a time (the other values of a plain key's sweep reach the same key)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for text, override in zip(overrides, parsed, strict=True):
        key = text.split("=", 1)[0]
        if override.is_sweep_override():
            values = [f"{key}={value}" for value in override.sweep_string_iterator()]
            choices.append(values if is_group(key) else values[:1])
        else:
            choices.append([text])
    first = [values[0] for values in choices]
    variants = [first]
    for index, values in enumerate(choices):
        variants += [[*first[:index], value, *first[index + 1 :]] for value in values[1:]]
    return variants


def check_hydra(entry: str, overrides: list[str]) -> None:
    """The overrides compose with conf/<entry>.yaml, as `python -m fruitres.<entry> ... --cfg job` would."""
    for variant in override_variants(overrides):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            compose(config_name=entry, overrides=variant, return_hydra_config=True)


def run_parser(run: Callable[[], object], argv: list[str]) -> argparse.Namespace | None:
    """Run a module or script as `__main__` until its parser accepts `argv` (None: it printed its help)."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    stderr = io.StringIO()
    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop),
        mock.patch.object(sys, "argv", argv),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(stderr),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module was imported before
        try:
            run()
        except Parsed as parsed:
            return parsed.args[0]
        except SystemExit as exit:
            if exit.code in (0, None):
                return None
            lines = stderr.getvalue().strip().splitlines() or [f"exit status {exit.code}"]
            raise AssertionError(f"{' '.join(argv)}: {lines[-1]}") from None
    raise AssertionError(f"{' '.join(argv)}: ran to its end without parsing its arguments")


def with_data_folder(words: list[str], data_dir: Path) -> list[str]:
    """A `--data-dir` that is not a data folder here (the shared sample, /path/to/...) becomes `data_dir`."""
    out = list(words)
    for index, word in enumerate(out[:-1]):
        if word == "--data-dir" and not (Path(out[index + 1]) / "Training").is_dir():
            out[index + 1] = str(data_dir)
    return out


def check_argparse(run: Callable[[], object], name: str, args: list[str], data_dir: Path) -> None:
    namespace = run_parser(run, [name, *with_data_folder(args, data_dir)])
    overrides = getattr(namespace, "overrides", None) or []
    if overrides:  # the benchmarks' Hydra overrides of the training config
        check_hydra("train", overrides)


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", text, flags=re.MULTILINE))


def check_make(args: list[str], data_dir: Path) -> None:
    """Each target exists; what `make -n` prints for the command is checked as commands in turn."""
    targets = [arg for arg in args if not arg.startswith("-") and "=" not in arg]
    missing = sorted(set(targets) - makefile_targets())
    assert not missing, f"no such Makefile target: {', '.join(missing)}"
    if shutil.which("make") is None:
        return
    done = subprocess.run(
        ["make", "-n", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"make -n {' '.join(args)}: {done.stderr.strip()}"
    for _, line in logical_lines(done.stdout.splitlines(), 1):
        for words in simple_commands(line):
            words = strip_prefixes(filled(words))
            if words and words[0] != "make":
                check_words(words, data_dir)


def check_words(words: list[str], data_dir: Path) -> bool:
    """Check one simple command; False when it is not a fruitres, script or make command."""
    program = Path(words[0]).name if words else ""
    if program in {"python", "python3"} and len(words) > 2 and words[1] == "-m":
        module, args = words[2], words[3:]
        if not module.startswith("fruitres"):
            return False
        entry = module.removeprefix("fruitres.")
        if entry in HYDRA_ENTRY_POINTS:
            overrides, _ = hydra_overrides(entry, args)
            check_hydra(entry, overrides)
        else:
            check_argparse(
                lambda: runpy.run_module(module, run_name="__main__", alter_sys=True), module, args, data_dir
            )
        return True
    if program in {"python", "python3"} and len(words) > 1 and words[1].endswith(".py"):
        script = REPO / words[1]
        assert script.is_file(), f"no such script: {words[1]}"
        check_argparse(
            lambda: runpy.run_path(str(script), run_name="__main__"), words[1], words[2:], data_dir
        )
        return True
    if program in {"bash", "sh", "sbatch"}:
        scripts = [word for word in words[1:] if not word.startswith("-")][:1]
        for script in scripts:
            assert (REPO / script).is_file(), f"no such script: {script}"
        return bool(scripts)
    if program == "make":
        check_make(words[1:], data_dir)
        return True
    return False


def check_command(text: str, data_dir: Path) -> int:
    """Check every simple command in one doc line; how many were fruitres, script or make commands."""
    checked = 0
    for words in simple_commands(text):
        checked += check_words(strip_prefixes(filled(words)), data_dir)
    return checked


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that passes for a dataset where a parser checks `--data-dir` (Training/ and Test/)."""
    root = tmp_path_factory.mktemp("docs-data")
    for split in ("Training", "Test"):
        (root / split / "Apple").mkdir(parents=True)
    return root


COMMANDS = doc_commands()


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.doc.name}:{c.line}" for c in COMMANDS])
def test_every_command_in_the_docs_still_parses(command: Command, data_dir: Path) -> None:
    try:
        check_command(command.text, data_dir)
    except Exception as error:  # Hydra's and argparse's errors, with the doc line that showed the command
        message = str(error).strip().splitlines()
        pytest.fail(f"{command}\n  does not parse: {' '.join(message[:3])}", pytrace=False)


def test_the_docs_show_the_main_commands() -> None:
    texts = "\n".join(command.text for command in COMMANDS)
    for expected in ("make train", "make test", "python -m fruitres.train experiment=resnet18"):
        assert expected in texts


@pytest.mark.parametrize(
    "text",
    [
        "python -m fruitres.train model.no_such_key=1",
        "python -m fruitres.train -m experiment=resnet18,no_such_experiment",
        "python -m fruitres.eval ckpt_path=<.ckpt> tta=flip no_such_group/option=x",
        "python -m fruitres.data.check /data --no-such-flag",
        "python -m fruitres.bench tta --target 2",
        "PYTHONPATH=. python -m fruitres.no_such_module",
        "make no-such-target",
        'make train ARGS="model.no_such_key=1"',
        "echo $(python -m fruitres.train model/optimizer=no_such_optimizer)",
    ],
)
def test_a_command_that_no_longer_parses_fails(text: str, data_dir: Path) -> None:
    with pytest.raises((AssertionError, HydraException, ImportError)):
        check_command(text, data_dir)


# --- links --------------------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    """The anchors of a markdown file's headings (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(doc):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken(target: str, source: Path) -> str | None:
    """Why a relative link from `source` does not resolve, or None."""
    path_text, _, anchor = target.partition("#")
    path = (source.parent / path_text).resolve() if path_text else source
    if not path.exists():
        return f"no file {path_text}"
    if anchor and path.suffix == ".md" and anchor not in anchors(path):
        return f"no heading #{anchor} in {path.relative_to(REPO)}"
    return None


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_every_relative_link_resolves(doc: Path) -> None:
    problems = []
    for line in prose_lines(doc):
        line = re.sub(r"`[^`]*`", "", line)
        for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and (why := broken(target, doc)):
                problems.append(f"({target}): {why}")
    assert not problems, f"{doc.relative_to(REPO)}: broken links\n" + "\n".join(problems)


def test_docs_pointers_in_configs_and_code_resolve() -> None:
    sources = [*CONF.rglob("*.yaml"), *(REPO / "fruitres").rglob("*.py"), REPO / "Makefile"]
    sources += [*(REPO / "scripts").rglob("*"), *(REPO / "benchmarks").rglob("*.py")]
    problems = []
    for source in sorted(path for path in sources if path.is_file()):
        for name, anchor in DOC_POINTER.findall(source.read_text(errors="replace")):
            target = f"{name}#{anchor}" if anchor else name
            if why := broken(target, REPO / "docs" / "index.md"):
                problems.append(f"{source.relative_to(REPO)}: docs/{target}: {why}")
    assert not problems, "\n".join(problems)


def test_github_anchors_are_computed_as_github_does() -> None:
    assert slug("Sweep: learning rate × frozen stages") == "sweep-learning-rate--frozen-stages"
    assert slug("`resnet18_scratch` in its 10-minute budget, float32") == (
        "resnet18_scratch-in-its-10-minute-budget-float32"
    )
    assert slug("Near-duplicate frames between Training/ and Test/") == (
        "near-duplicate-frames-between-training-and-test"
    )


# --- the guides name what there is --------------------------------------------------------------------------


def config_groups() -> dict[str, set[str]]:
    """Every config group under conf/ (a folder of YAML files) and its options."""
    groups: dict[str, set[str]] = {}
    for path in CONF.rglob("*.yaml"):
        if path.parent != CONF:
            groups.setdefault(path.parent.relative_to(CONF).as_posix(), set()).add(path.stem)
    return groups


def test_the_config_table_lists_every_group_and_option() -> None:
    doc = REPO / "docs" / "configuration.md"
    rows = {}
    for line in prose_lines(doc):
        match = re.match(r"^\|\s*`([\w/]+)`\s*\|([^|]*)\|", line)
        if match:
            rows[match.group(1)] = set(re.findall(r"`([\w/]+)`", match.group(2)))
    problems = []
    for group, options in sorted(config_groups().items()):
        if group not in rows:
            problems.append(f"group {group} ({', '.join(sorted(options))}) has no row")
        elif missing := options - rows[group]:
            problems.append(f"group {group}: options {', '.join(sorted(missing))} missing")
    roots = {path.name for path in CONF.glob("*.yaml")}
    problems += [
        f"root config {name} not named" for name in sorted(roots) if f"`{name}`" not in doc.read_text()
    ]
    assert not problems, "docs/configuration.md, the config groups:\n" + "\n".join(problems)


def test_the_layout_names_every_module() -> None:
    blocks = [lines for _, language, lines in code_blocks(REPO / "docs" / "development.md") if not language]
    layout = next(("\n".join(lines) for lines in blocks if any("fruitres/" in line for line in lines)), "")
    package = REPO / "fruitres"
    names = {path.name + "/" for path in package.iterdir() if (path / "__init__.py").is_file()}
    names |= {path.stem for path in package.rglob("*.py") if path.stem not in {"__init__", "__main__"}}
    missing = sorted(name for name in names if not re.search(rf"(?<![\w/]){re.escape(name)}(?!\w)", layout))
    assert not missing, "docs/development.md's layout does not name: " + ", ".join(missing)
