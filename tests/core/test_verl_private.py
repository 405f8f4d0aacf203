"""Every private verl name the plugin relies on (verl_personadual/core/verl_private.py) against the installed verl:
an upgrade that renames or re-signs one fails here instead of silently skipping an override."""

from __future__ import annotations

import importlib
import inspect

import pytest

from verl_personadual.core.cpu.engine import CPUFSDPEngineWithLMHead
from verl_personadual.core.cpu.rollout import HFRolloutAdapter
from verl_personadual.core.names import AGENT_LOOP_FORCED, AGENT_LOOP_FREE, CPU_ROLLOUT
from verl_personadual.core.plugin import DEFERRED
from verl_personadual.core.trainer import PersonaDualGlue, PersonaDualSeparateAsyncTrainer, PluginTrainer
from verl_personadual.core.verl_private import (
    OVERRIDDEN_METHODS,
    REGISTRY_HOLDERS,
    ROLLOUT_MODE,
    agent_loop_names,
)

#: The plugin class that overrides each listed method (its own class dict holds the override).
OWNERS = {
    "_build_fsdp_module": CPUFSDPEngineWithLMHead,
    "_init_resource_pool_mgr": PluginTrainer,
    "_build_replay_buffer": PluginTrainer,
    "_init_tokenizer": PersonaDualGlue,
    "_compute_advantage": PersonaDualGlue,
    "_compute_ref_log_prob": PersonaDualGlue,
    "_val_metrics_update": PersonaDualGlue,
    "_setup": PersonaDualSeparateAsyncTrainer,
}


def test_every_override_is_listed_once():
    assert sorted(m for _, _, m in OVERRIDDEN_METHODS) == sorted(OWNERS)


@pytest.mark.parametrize(("module", "cls", "method"), OVERRIDDEN_METHODS, ids=[m for _, _, m in OVERRIDDEN_METHODS])
def test_overridden_method_exists_in_verl_with_our_signature(module, cls, method):
    verl_cls = getattr(importlib.import_module(module), cls)
    ours = OWNERS[method]
    assert issubclass(ours, verl_cls), f"{ours.__name__} no longer derives from verl's {module}.{cls}"
    assert method in vars(ours), f"{ours.__name__} does not define {method}"
    theirs = inspect.getattr_static(verl_cls, method)
    assert callable(theirs), f"verl's {cls}.{method} is gone"
    params = lambda f: [p.name for p in inspect.signature(f).parameters.values()]  # noqa: E731
    assert params(vars(ours)[method]) == params(theirs), f"{cls}.{method} changed its parameters in verl"


def test_rollout_adapter_registered_in_verls_private_registry():
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY, get_rollout_class

    assert (CPU_ROLLOUT, ROLLOUT_MODE) in _ROLLOUT_REGISTRY
    assert get_rollout_class(CPU_ROLLOUT, ROLLOUT_MODE) is HFRolloutAdapter


def test_every_deferred_registration_names_its_registries():
    assert set(REGISTRY_HOLDERS) == set(DEFERRED)


@pytest.mark.parametrize("holder", sorted(REGISTRY_HOLDERS))
def test_registries_are_defined_in_the_module_the_plugin_waits_for(holder):
    for dotted in REGISTRY_HOLDERS[holder]:
        module_name, attr = dotted.rsplit(".", 1)
        assert module_name == holder or module_name.startswith(holder + "."), dotted
        module = importlib.import_module(module_name)
        value = getattr(module, attr)  # AttributeError: verl moved or renamed the registry
        if isinstance(value, type):
            assert value.__module__ == module_name, f"{dotted} is now defined in {value.__module__}"
        else:
            assert isinstance(value, dict), dotted


def test_agent_loop_names_lists_verls_registry_with_ours():
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry

    names = agent_loop_names()
    assert names == sorted(_agent_loop_registry)
    assert {AGENT_LOOP_FORCED, AGENT_LOOP_FREE, "single_turn_agent"} <= set(names)
