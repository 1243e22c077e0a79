"""ComfyUI workflows <-> the KSampler Sequence node's settings (`SequenceParams.from_comfy` /
`to_comfy` are the doors; this module knows ComfyUI's JSON and nothing of `SequenceParams`).

ComfyUI saves a workflow in one of two JSON shapes:

* the **UI format** (File > Save): ``{"nodes": [...], "links": [...], ...}``. Each node has a
  ``type`` and ``widgets_values``, the values of its widget inputs in the node's input order;
  linked inputs (``MODEL``, ``CONDITIONING_SEQ``, ``LATENT``) have no widget. The frontend adds a
  ``control_after_generate`` value (``"fixed"``, ``"increment"``, ``"decrement"`` or
  ``"randomize"``) right after every ``seed`` widget. A link is ``[id, origin_node, origin_slot,
  target_node, target_slot, type]`` (or a dict with those keys in newer files);
* the **API format** (Export (API)): ``{"<node id>": {"class_type": ..., "inputs": {...}}}``,
  where an input is a value or a link ``[origin_node_id, origin_slot]``.

`settings_from_workflow` reads the ``KSamplerSeq`` node and follows its ``positive_seq`` /
``negative_seq`` links (through ``Reroute`` nodes) to the ``CLIPTextEncodeList`` nodes (WAS_Extras'
CLIP Text Encode Sequence) for the keyframe texts, and its ``latent_image`` link to an
``EmptyLatentImage`` for the width and height. `widgets_values`, `api_inputs` and `api_workflow`
go the other way.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

from . import _io
from .errors import ParamWarning, short_repr

__all__ = [
    "NODE_CLASS",
    "NODE_WIDGETS",
    "TEXT_ENCODER_CLASS",
    "api_inputs",
    "api_workflow",
    "settings_from_workflow",
    "widgets_values",
]

NODE_CLASS = "KSamplerSeq"
TEXT_ENCODER_CLASS = "CLIPTextEncodeList"
#: The node's widget inputs, in its ``INPUT_TYPES`` order (linked inputs left out).
NODE_WIDGETS = (
    "seed",
    "seed_mode_seq",
    "alternate_values",
    "steps",
    "cfg",
    "sampler_name",
    "scheduler",
    "sequence_loop_count",
    "use_conditioning_slerp",
    "cond_slerp_strength",
    "use_latent_interpolation",
    "latent_interpolation_mode",
    "latent_interp_strength",
    "denoise_start",
    "denoise_seq",
    "unsample_latents",
)
#: The text encoder's widgets: ``token_normalization``, ``weight_interpretation``, ``text``.
TEXT_ENCODER_WIDGETS = ("token_normalization", "weight_interpretation", "text")
#: The node's ``INT`` widgets: ComfyUI's frontend may save them as JavaScript numbers (20.0).
INT_WIDGETS = ("seed", "steps", "sequence_loop_count")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
_KEYFRAME = re.compile(r"(\d+):")  # the encoder's own test: re.match, no leading spaces


# -- reading -----------------------------------------------------------------------------------


def settings_from_workflow(
    workflow: Mapping[str, Any] | str | os.PathLike, *, node_id: str | int | None = None
) -> tuple[str, dict[str, Any]]:
    """The settings of the ``KSamplerSeq`` node of a ComfyUI workflow, as keyword arguments of
    `SequenceParams` (which checks them: use `SequenceParams.from_comfy`), with the node's name
    for messages (``"KSamplerSeq node 5"``).

    Args:
        workflow: the workflow as a dict, a path to its JSON file, or JSON text (UI or API
            format; a ``{"workflow": ...}`` or ``{"prompt": ...}`` wrapper is unwrapped).
        node_id: which ``KSamplerSeq`` node, when the workflow has several.

    Keyframe lines that ComfyUI's encoder skips (no ``N:`` at the very start of the line) are
    dropped with a `UserWarning`, as are repeated indices (the node uses the first). Settings
    outside what seqwidgets supports (e.g. a sampler it lacks) are left for `SequenceParams`,
    whose `ValueError` `SequenceParams.from_comfy` prefixes with the node's name.

    Raises:
        `ValueError`: not a workflow, no (or an ambiguous) ``KSamplerSeq`` node, a malformed
        node, a keyframe input not linked to a ``CLIPTextEncodeList`` node.
    """
    graph = _Graph(_as_workflow(workflow))
    node = graph.find(node_id)
    where = f"{NODE_CLASS} node {node.id}"
    values = graph.widgets(node, NODE_WIDGETS, seed_control=True)
    fields: dict[str, Any] = {}
    for name, value in values.items():
        fields[name] = _js_int(value) if name in INT_WIDGETS else value
    for name in ("positive_seq", "negative_seq"):
        fields[name] = graph.keyframe_text(node, name)
    fields.update(graph.latent_size(node))
    return where, fields


def _js_int(value: Any) -> Any:
    """JavaScript numbers: 20.0 is 20. Anything else is left for `SequenceParams` to judge."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _as_workflow(workflow: Any) -> dict:
    if isinstance(workflow, (str, os.PathLike)):
        if isinstance(workflow, str) and workflow.lstrip()[:1] in ("{", "["):
            source, where = workflow, "the workflow text"
        else:
            source, where = _read_workflow_file(workflow), str(workflow)
        try:
            workflow = json.loads(source, object_pairs_hook=_refuse_duplicate_keys)
        except _DuplicateKey as error:
            raise ValueError(f"{where}: {error}") from None
        except RecursionError:
            raise ValueError(f"{where}: JSON nested too deeply to be a workflow") from None
        except ValueError as error:  # JSONDecodeError, or an integer of too many digits
            raise ValueError(f"{where}: not JSON: {error}") from None
    if not isinstance(workflow, Mapping):
        raise ValueError(f"a ComfyUI workflow is a JSON object, got {type(workflow).__name__}")
    for wrapper in ("workflow", "prompt"):
        inner = workflow.get(wrapper)
        if isinstance(inner, Mapping) and "nodes" not in workflow:
            return dict(inner)
    return dict(workflow)


class _DuplicateKey(ValueError):
    pass


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object, refusing a key given twice: ``json`` would keep the last one silently,
    and in the API format a key is a node id, so the first node would vanish."""
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"the key {short_repr(key)} appears twice in one JSON object")
        result[key] = value
    return result


def _read_workflow_file(path: str | os.PathLike) -> str:
    shown = short_repr(str(path))
    try:
        # Checked on the open descriptor: a FIFO or device is refused, never waited on.
        return _io.read_regular(path, "workflow file", shown=shown).decode("utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{shown}: no such workflow file") from None
    except _io.NotRegularFileError:
        raise
    except UnicodeDecodeError as error:
        raise ValueError(f"{shown}: not a workflow (not UTF-8 text: {error})") from None
    except (OSError, ValueError) as error:  # a name too long for a path, a NUL, a folder
        raise ValueError(
            f"{shown}: neither JSON text (it does not start with '{{') nor a readable workflow "
            f"file ({error.strerror if isinstance(error, OSError) else error})"
        ) from None


class _Node:
    def __init__(self, node_id: str, kind: str, widgets: Any, inputs: Any):
        self.id = node_id
        self.kind = kind
        self.widgets = widgets  # UI: widgets_values (list or dict); API: None
        self.inputs = inputs  # UI: list of {"name", "link"}; API: dict name -> value | link


def _refuse_duplicate(kind: str, key: str, seen: Mapping[str, Any]) -> None:
    # Ids are compared as text, as ComfyUI's links name them: 5 and "5" are the same node.
    if key in seen:
        raise ValueError(
            f"workflow: two {kind}s have the id {short_repr(key)}; each {kind} id must be unique "
            "(a hand-edited or merged workflow?)"
        )


class _Graph:
    """Nodes and links of either format, behind one interface."""

    def __init__(self, workflow: dict):
        self.nodes: dict[str, _Node] = {}
        self.links: dict[str, tuple[str, int]] = {}  # UI link id -> (origin node, slot)
        if isinstance(workflow.get("nodes"), list):
            self.format = "UI"
            for n, raw in enumerate(workflow["nodes"]):
                if not isinstance(raw, Mapping) or "id" not in raw or "type" not in raw:
                    raise ValueError(f"UI workflow: nodes[{n}] has no 'id' and 'type'")
                node_id = str(raw["id"])
                _refuse_duplicate("node", node_id, self.nodes)
                inputs = raw.get("inputs") or []
                if not isinstance(inputs, list):
                    raise ValueError(
                        f"UI workflow: node {short_repr(node_id)} has inputs {short_repr(inputs)}; "
                        "expected a list"
                    )
                self.nodes[node_id] = _Node(
                    node_id, str(raw["type"]), raw.get("widgets_values"), inputs
                )
            for raw in workflow.get("links") or []:
                if isinstance(raw, Mapping):
                    link_id, origin, slot = (
                        raw.get("id"),
                        raw.get("origin_id"),
                        raw.get("origin_slot"),
                    )
                elif isinstance(raw, list) and len(raw) >= 3:
                    link_id, origin, slot = raw[0], raw[1], raw[2]
                else:
                    raise ValueError(f"UI workflow: malformed link {short_repr(raw)}")
                _refuse_duplicate("link", str(link_id), self.links)
                self.links[str(link_id)] = (str(origin), slot)
        elif workflow and all(
            isinstance(v, Mapping) and "class_type" in v for v in workflow.values()
        ):
            self.format = "API"
            for node_id, raw in workflow.items():
                _refuse_duplicate("node", str(node_id), self.nodes)  # 5 and "5" in a dict
                inputs = raw.get("inputs") or {}
                if not isinstance(inputs, Mapping):
                    raise ValueError(
                        f"API workflow: node {short_repr(node_id)} has inputs {short_repr(inputs)}; "
                        "expected an object"
                    )
                self.nodes[str(node_id)] = _Node(str(node_id), str(raw["class_type"]), None, inputs)
        else:
            raise ValueError(
                "not a ComfyUI workflow: expected the UI format (a 'nodes' list) or the API "
                "format ({id: {'class_type', 'inputs'}})"
            )

    def find(self, node_id) -> _Node:
        found = [node for node in self.nodes.values() if node.kind == NODE_CLASS]
        if node_id is not None:
            node = self.nodes.get(str(node_id))
            if node is None or node.kind != NODE_CLASS:
                ids = ", ".join(n.id for n in found) or "none"
                raise ValueError(
                    f"this {self.format} workflow has no {NODE_CLASS} node {node_id} "
                    f"(its {NODE_CLASS} nodes: {ids})"
                )
            return node
        if not found:
            kinds = sorted({node.kind for node in self.nodes.values()})
            raise ValueError(
                f"this {self.format} workflow has no {NODE_CLASS} (KSampler Sequence) node; "
                f"its nodes are: {', '.join(kinds) or 'none'}"
            )
        if len(found) > 1:
            raise ValueError(
                f"this workflow has {len(found)} {NODE_CLASS} nodes "
                f"({', '.join(n.id for n in found)}); pass node_id to choose one"
            )
        return found[0]

    def widgets(self, node: _Node, names: tuple[str, ...], *, seed_control=False) -> dict:
        """The node's widget values by name."""
        where = f"{node.kind} node {node.id}"
        if self.format == "API":
            values = {}
            for name in names:
                if name not in node.inputs:
                    raise ValueError(f"{where}: input {name!r} missing")
                value = node.inputs[name]
                if _is_api_link(value):
                    source = self.nodes.get(str(value[0]))
                    kind = source.kind if source else "missing"
                    raise ValueError(
                        f"{where}: input {name!r} is linked to node {value[0]} ({kind}); only "
                        "literal values can be imported"
                    )
                values[name] = value
            return values
        raw = node.widgets
        if isinstance(raw, Mapping):  # some frontends save widgets by name
            missing = [name for name in names if name not in raw]
            if missing:
                raise ValueError(f"{where}: widgets_values lacks {', '.join(missing)}")
            return {name: raw[name] for name in names}
        if not isinstance(raw, list):
            raise ValueError(f"{where}: widgets_values missing or not a list: {short_repr(raw)}")
        raw = list(raw)
        # The frontend's control_after_generate value follows the seed. Its values overlap
        # seed_mode_seq's, so tell the layouts apart by type: without it, [2] is a boolean.
        if (
            seed_control
            and len(raw) > 2
            and (len(raw) == len(names) + 1 or not isinstance(raw[2], bool))
        ):
            control = raw.pop(1)
            if control not in CONTROL_VALUES:
                raise ValueError(
                    f"{where}: widgets_values[1] should be the seed's control_after_generate "
                    f"({', '.join(CONTROL_VALUES)}), got {short_repr(control)}"
                )
        if len(raw) != len(names):
            expected = f"{len(names)}" + (
                f" ({len(names) + 1} with control_after_generate)" if seed_control else ""
            )
            raise ValueError(
                f"{where}: expected {expected} widgets_values in the order "
                f"{', '.join(names)}; got {len(node.widgets)}"
            )
        return dict(zip(names, raw, strict=True))

    def source(self, node: _Node, name: str) -> _Node | None:
        """The node feeding input ``name`` (through Reroute nodes), or None if unlinked."""
        seen = set()
        while True:
            origin = self._origin(node, name)
            if origin is None:
                return None
            if origin not in self.nodes:
                raise ValueError(
                    f"{node.kind} node {node.id}: input {name!r} links to node {origin}, "
                    "which is not in the workflow"
                )
            node = self.nodes[origin]
            if node.kind != "Reroute" or node.id in seen:
                return node
            seen.add(node.id)
            name = None  # a Reroute has one input

    def _origin(self, node: _Node, name: str | None) -> str | None:
        if self.format == "API":
            value = node.inputs.get(name) if name else next(iter(node.inputs.values()), None)
            return str(value[0]) if _is_api_link(value) else None
        for item in node.inputs:
            if isinstance(item, Mapping) and (name is None or item.get("name") == name):
                link = item.get("link")
                if link is None:
                    return None
                if str(link) not in self.links:
                    raise ValueError(
                        f"{node.kind} node {node.id}: input {name!r} uses link {link}, which "
                        "is not in the workflow's links"
                    )
                return self.links[str(link)][0]
        return None

    def keyframe_text(self, node: _Node, name: str) -> str:
        where = f"{NODE_CLASS} node {node.id}"
        source = self.source(node, name)
        if source is None:
            raise ValueError(
                f"{where}: {name} is not connected; link it to a CLIP Text Encode Sequence "
                f"({TEXT_ENCODER_CLASS}) node"
            )
        if source.kind != TEXT_ENCODER_CLASS:
            raise ValueError(
                f"{where}: {name} comes from a {source.kind} node ({source.id}); only "
                f"{TEXT_ENCODER_CLASS} (CLIP Text Encode Sequence) keyframe texts can be read"
            )
        if self.format == "UI" and isinstance(source.widgets, list):
            if len(source.widgets) != len(TEXT_ENCODER_WIDGETS):
                raise ValueError(
                    f"{TEXT_ENCODER_CLASS} node {source.id}: expected 3 widgets_values "
                    f"({', '.join(TEXT_ENCODER_WIDGETS)}), got {len(source.widgets)}"
                )
            value = source.widgets[2]
        else:
            value = self.widgets(source, ("text",))["text"]
        if not isinstance(value, str):
            raise ValueError(f"{TEXT_ENCODER_CLASS} node {source.id}: text is {short_repr(value)}")
        return _comfy_keyframes(value, f"{name} ({TEXT_ENCODER_CLASS} node {source.id})")

    def latent_size(self, node: _Node) -> dict[str, int]:
        """``width`` / ``height`` from an EmptyLatentImage feeding latent_image, if any."""
        source = self.source(node, "latent_image")
        if source is None:
            return {}
        if source.kind != "EmptyLatentImage":
            warnings.warn(
                f"{NODE_CLASS} node {node.id}: latent_image comes from a {source.kind} node; "
                "it is not imported: pass latent_image or init_image to the run yourself",
                UserWarning,
                stacklevel=4,
            )
            return {}
        size = self.widgets(source, ("width", "height", "batch_size"))
        if size["batch_size"] != 1:
            warnings.warn(
                f"EmptyLatentImage node {source.id}: batch_size {size['batch_size']} is "
                "ignored (seqwidgets runs one latent)",
                UserWarning,
                stacklevel=4,
            )
        for name in ("width", "height"):
            if size[name] is None:  # None means "the pipeline's size" to seqwidgets, not here
                raise ValueError(f"EmptyLatentImage node {source.id}: {name} is missing (None)")
        # Left for SequenceParams to check (naming the field): 64.5, "64" or inf is an error
        # there, not silently made an int here.
        return {"width": _js_int(size["width"]), "height": _js_int(size["height"])}


def _is_api_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], (str, int))
        and isinstance(value[1], int)
    )


def _comfy_keyframes(text: str, where: str) -> str:
    """The lines ComfyUI's encoder reads, as a keyframe text our parser accepts."""
    kept, dropped, seen = [], [], set()
    for line in text.strip().splitlines():
        match = _KEYFRAME.match(line)
        stripped = line.strip()
        if match is None:
            if stripped and not stripped.startswith("#"):
                dropped.append(line)
            continue
        index = match.group(1).lstrip("0")  # as text: int() refuses thousands of digits
        if index in seen:
            dropped.append(line)
            continue
        seen.add(index)
        kept.append(line)
    if not dropped:
        return text  # ComfyUI reads every keyframe line as we do: keep the text as written
    shown = "; ".join(repr(line) for line in dropped[:3])
    more = f" and {len(dropped) - 3} more" if len(dropped) > 3 else ""
    warnings.warn(
        f"{where}: dropped {len(dropped)} line(s) that ComfyUI ignores too (no 'N:' at the "
        f"start, or an index already used): {shown}{more}",
        UserWarning,
        stacklevel=4,
    )
    return "\n".join(kept)


# -- writing -----------------------------------------------------------------------------------


def widgets_values(params: Any, *, control_after_generate: str | None = "fixed") -> list[Any]:
    """The node's ``widgets_values`` as the ComfyUI frontend saves them.

    Args:
        params: the settings, a `SequenceParams` (read by attribute).
        control_after_generate (`str` or `None`, defaults to ``"fixed"``): the value the
            frontend inserts after ``seed`` (``"fixed"`` keeps the seed from run to run);
            ``None`` leaves it out.
    """
    _drop_ours(params)
    values = [getattr(params, name) for name in NODE_WIDGETS]
    if control_after_generate is not None:
        if control_after_generate not in CONTROL_VALUES:
            raise ValueError(
                f"control_after_generate: {control_after_generate!r} is unknown; allowed: "
                f"{', '.join(CONTROL_VALUES)} or None"
            )
        values.insert(1, control_after_generate)
    return values


def api_inputs(params: Any) -> dict[str, Any]:
    """The node's widget inputs for the API format (the links are not included)."""
    _drop_ours(params)
    return {name: getattr(params, name) for name in NODE_WIDGETS}


#: Our settings the node has no input for: the value that means "as the node does" (their
#: `SequenceParams` default) and what losing another value means in ComfyUI.
DROPPED = {
    "color_coherence": ("none", "the node runs without colour coherence"),
    "flux_guidance": (3.5, "set it with ComfyUI's FluxGuidance node on the positive conditioning"),
}


def _drop_ours(params: Any) -> None:
    """Warn about each of our settings, changed from its default, that the node's inputs lose."""
    for name, (default, consequence) in DROPPED.items():
        value = getattr(params, name)
        if value != default:
            warnings.warn(
                ParamWarning(
                    name,
                    f"{name}={value!r} is a seqwidgets addition that ComfyUI's node lacks: it "
                    f"is dropped ({consequence})",
                ),
                stacklevel=3,
            )


def api_workflow(
    params: Any, *, ckpt_name: str = "v1-5-pruned-emaonly.safetensors"
) -> dict[str, Any]:
    """A complete API-format workflow running ``params``: checkpoint loader, the two keyframe
    encoders, an empty latent (``params.width`` / ``height``, default 512), KSamplerSeq, VAE
    decode and save. `settings_from_workflow` reads it back to ``params`` (whose
    ``keyframe_interpolation``, a seqwidgets addition, must be ``"none"``)."""
    if params.keyframe_interpolation != "none":
        raise ValueError(
            "keyframe_interpolation is a seqwidgets addition that ComfyUI's node lacks; set it "
            "to 'none' to export"
        )

    def encoder(text: str) -> dict:
        return {
            "class_type": TEXT_ENCODER_CLASS,
            "inputs": {
                "clip": ["1", 1],
                "token_normalization": "none",
                "weight_interpretation": "comfy",
                "text": text,
            },
        }

    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": encoder(params.positive_seq),
        "3": encoder(params.negative_seq),
        "4": {
            "class_type": "EmptyLatentImage",
            "inputs": {
                "width": params.width or 512,
                "height": params.height or 512,
                "batch_size": 1,
            },
        },
        "5": {
            "class_type": NODE_CLASS,
            "inputs": {
                **api_inputs(params),
                "model": ["1", 0],
                "positive_seq": ["2", 0],
                "negative_seq": ["3", 0],
                "latent_image": ["4", 0],
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {
            "class_type": "SaveImage",
            "inputs": {"images": ["6", 0], "filename_prefix": "KSamplerSeq"},
        },
    }
