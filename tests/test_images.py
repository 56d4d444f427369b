"""The image, its lock file, Cloud Build and the template upload.

Invariants: the lock pins every runtime dependency at a version the project accepts and
nothing test-only; the Dockerfile installs from the lock, runs as a non-root user and checks
that its tag is the package version; cloudbuild.yaml runs lint and test, build, push to every
region, compile and upload in that order, references files that exist, declares every
substitution it uses (and uses every one it declares), and tags images with the version; the
upload goes through kfp's RegistryClient (to a loopback stand-in of the registry's upload
endpoint) and refuses bad input before sending anything.
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import vertex_patterns
from vertex_patterns.errors import ConfigError
from vertex_patterns.pipelines.registry import main as upload_main
from vertex_patterns.pipelines.registry import upload_templates

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "containers" / "requirements.lock"
DOCKERFILE = ROOT / "containers" / "Dockerfile"
CLOUDBUILD = ROOT / "cloudbuild.yaml"
TEST_ONLY = {"pytest", "pytest-timeout", "ruff", "mypy", "types-requests"}


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def project_requirements() -> list[Requirement]:
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as f:
        return [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), re.M))


class TestLockFile:
    """The lock pins each runtime dependency at a version pyproject accepts; torch is pinned
    by the Dockerfile instead, and no test tool gets into the image."""

    def test_pins_runtime_dependencies(self) -> None:
        pins = lock_pins()
        for req in project_requirements():
            name = canonicalize_name(req.name)
            if name == "torch":
                assert name not in pins
                assert req.specifier.contains(dockerfile_args()["TORCH_VERSION"])
                continue
            assert name in pins, f"{req.name} is not in the lock: run `make lock`"
            assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])
        assert not TEST_ONLY & set(pins)
        assert all(re.fullmatch(r"[\w.!+-]+", v) for v in pins.values())

    def test_complete(self) -> None:
        """Everything the installed package needs at run time (extras of requirements
        included, e.g. google-api-core[grpc] -> grpcio-status) is pinned."""
        import importlib.util

        spec = importlib.util.spec_from_file_location("lock", ROOT / "containers" / "lock.py")
        assert spec is not None and spec.loader is not None
        lock = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(lock)
        needed = set(lock.runtime_closure())
        assert "grpcio-status" in needed and "pytest" not in needed
        assert needed <= set(lock_pins()), f"{needed - set(lock_pins())}: run `make lock`"


class TestDockerfile:
    """Installs the lock, then the package without dependencies; checks the tag is the
    package version; ends as a non-root user; torch matches the version `make` installs."""

    def test_structure(self) -> None:
        text = DOCKERFILE.read_text()
        assert "COPY containers/requirements.lock" in text
        assert "pip install --requirement requirements.lock" in text
        assert "pip install --no-deps ." in text and "pip check" in text
        assert "vp.__version__" in text and "'${VERSION}'" in text
        args = dockerfile_args()
        assert args["VERSION"] == vertex_patterns.__version__
        make_torch = re.search(r"^TORCH_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(),
                               re.M)
        assert make_torch and args["TORCH_VERSION"] == make_torch.group(1)
        users = re.findall(r"^USER (\S+)$", text, re.M)
        assert users and users[-1].split(":")[0] not in {"root", "0"}


def steps() -> list[dict]:
    return yaml.safe_load(CLOUDBUILD.read_text())["steps"]


def step_text() -> str:
    """Every string of every step, one per line."""
    def walk(node: object) -> list[str]:
        if isinstance(node, dict):
            return [s for v in node.values() for s in walk(v)]
        if isinstance(node, list):
            return [s for v in node for s in walk(v)]
        return [str(node)]

    return "\n".join(walk(steps()))


class TestCloudBuild:
    """Order, files, substitutions and tags of cloudbuild.yaml."""

    def test_step_order(self) -> None:
        assert [s["id"] for s in steps()] == ["lint-and-test", "build", "push-regions",
                                              "compile", "upload-templates"]
        first = steps()[0]
        assert first["entrypoint"] == "make" and first["args"] == ["test"]
        assert "waitFor" not in json.dumps(steps())  # sequential: each waits for the last

    def test_referenced_files_exist(self) -> None:
        text = step_text()
        build = steps()[1]["args"]
        dockerfile = build[build.index("-f") + 1]
        assert (ROOT / dockerfile).is_file()
        copied = re.findall(r"^COPY (\S+)", DOCKERFILE.read_text(), re.M)
        assert copied and all((ROOT / path).exists() for path in copied), copied
        module = re.search(r"^-m\n([\w.]+)$", text, re.M)
        assert module is not None
        assert (ROOT / "src" / (module.group(1).replace(".", "/") + ".py")).is_file()
        makefile = (ROOT / "Makefile").read_text()
        assert re.search(r"^test:", makefile, re.M)

    def test_substitutions_declared_and_used(self) -> None:
        body = yaml.safe_load(CLOUDBUILD.read_text())
        declared = set(body["substitutions"])
        text = step_text()
        used = set(re.findall(r"(?<!\$)\$\{(_[A-Z0-9_]+)\}", text))
        assert used <= declared, used - declared
        assert declared <= used, declared - used
        builtin = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)\}", text))
        assert builtin <= {"PROJECT_ID", "BUILD_ID", "LOCATION", "COMMIT_SHA", "SHORT_SHA"}
        assert body["substitutions"]["_VERSION"] == vertex_patterns.__version__
        assert body["substitutions"]["_TORCH_VERSION"] == dockerfile_args()["TORCH_VERSION"]

    def test_images_tagged_with_version(self) -> None:
        images = re.findall(r"[\w${}./-]*\$\{_IMAGE\}(?::[^\s\"]*)?", step_text())
        assert images
        assert all(i.endswith(":${_VERSION}") for i in images), images
        build = steps()[1]["args"]
        assert "VERSION=${_VERSION}" in build
        push = steps()[2]["args"][-1]
        assert "${_REGIONS}" in push and "docker push" in push


class _Registry(BaseHTTPRequestHandler):
    """Answers a KFP template upload as Artifact Registry does: ``PACKAGE/sha256:HEX``."""

    uploads: list[dict] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        raw = (f"Content-Type: {self.headers['Content-Type']}\r\n\r\n").encode()
        message = email.parser.BytesParser().parsebytes(raw + self.rfile.read(length))
        fields = {part.get_param("name", header="content-disposition"):
                  part.get_payload(decode=True) for part in message.get_payload()}
        content = fields["content"]
        package = json.loads(content)["pipelineInfo"]["name"]
        digest = hashlib.sha256(content).hexdigest()
        self.uploads.append({"path": self.path, "package": package,
                             "tags": (fields.get("tags") or b"").decode(), "sha": digest})
        body = f"{package}/sha256:{digest}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def registry():
    _Registry.uploads = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/proj/repo", _Registry.uploads
    server.shutdown()
    server.server_close()


class TestUploadTemplates:
    """Templates go through kfp's RegistryClient with their tags; bad input is refused
    before anything is sent."""

    def test_uploads_with_tags(self, registry, tmp_path) -> None:
        from helpers.tiny_pipeline import compile_to

        host, uploads = registry
        path = compile_to(str(tmp_path / "tiny.json"))
        done = upload_templates(host, [path], ["v0.1.0", "latest"])
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        assert [(d.package, d.version, d.tags) for d in done] == [
            ("tiny-pipeline", f"sha256:{digest}", ("v0.1.0", "latest"))]
        assert uploads == [{"path": "/proj/repo", "package": "tiny-pipeline",
                            "tags": "v0.1.0,latest", "sha": digest}]

    @pytest.mark.parametrize("host, tags, message", [
        ("https://us-central1-docker.pkg.dev/proj/repo", ["v1"], "expected https://"),
        ("http://example.com/proj/repo", ["v1"], "expected https://"),
        ("https://us-central1-kfp.pkg.dev/my-project/pipelines", ["a,b"], "tag 'a,b'"),
        ("https://us-central1-kfp.pkg.dev/my-project/pipelines", ["sha256:ab"], "not a sha256"),
    ])
    def test_bad_input_sends_nothing(self, registry, tmp_path, capsys, host, tags,
                                     message) -> None:
        from helpers.tiny_pipeline import compile_to

        _, uploads = registry
        compile_to(str(tmp_path / "tiny.json"))
        with pytest.raises(ConfigError, match=re.escape(message)):
            upload_templates(host, [str(tmp_path / "tiny.json")], tags)
        assert upload_main([host, str(tmp_path), *tags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
        assert uploads == []

    def test_missing_directory(self, registry, tmp_path, capsys) -> None:
        host, uploads = registry
        assert upload_main([host, str(tmp_path / "nope"), "v1"]) == 2
        assert "not a directory" in capsys.readouterr().err and uploads == []
