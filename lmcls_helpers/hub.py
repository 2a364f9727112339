"""Access to a gated model on the Hugging Face hub (Llama 3): find a token, check it, or say the steps.

Meta-Llama-3-8B is gated: downloading it needs an accepted licence *and* a token. Without both,
``from_pretrained`` fails deep inside a download with a 401 or 403 traceback. ``hub_login`` runs in
each notebook's first cells instead, and turns every way this can fail into one message with the
steps. Profiles whose model is a local folder (tiny) or built from a config (shapes) need nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

TOKEN_PAGE = "https://huggingface.co/settings/tokens"


def access_steps(model_id: str, problem: str) -> str:
    """The message for every access failure: what went wrong, then the three steps that fix it."""
    return (f"{problem}\nTo use {model_id}:\n"
            f"  1. Sign in at https://huggingface.co/{model_id} and accept the licence (approval can take a while).\n"
            f"  2. Create a token with 'read' access at {TOKEN_PAGE}.\n"
            "  3. In Colab: the key icon (Secrets) > add HF_TOKEN with the token as its value, allow notebook access,\n"
            "     then run this cell again. Elsewhere: export HF_TOKEN=<token> before starting Jupyter.\n"
            "No GPU account at hand? The default 'tiny' profile runs offline on any CPU.")


def find_token() -> str | None:
    """A hub token: ``HF_TOKEN`` in the environment, a cached ``hf auth login``, or the Colab secret ``HF_TOKEN``."""
    from huggingface_hub import get_token

    return get_token()


def explain_hub_error(err: BaseException, model_id: str) -> RuntimeError | None:
    """A ``RuntimeError`` with the steps when ``err`` (or its cause) is a 401/403/gated error; else None."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    seen = err
    while seen is not None:
        status = getattr(getattr(seen, "response", None), "status_code", None)
        problem = ("Your token has no access to this gated model yet." if isinstance(seen, GatedRepoError) else
                   "The hub refused the token (401): it is missing, mistyped or revoked."
                   if isinstance(seen, RepositoryNotFoundError) or status == 401 else
                   "The hub refused access (403): accept the licence, or use a token with read access."
                   if isinstance(seen, HfHubHTTPError) and status == 403 else None)
        if problem:
            return RuntimeError(access_steps(model_id, problem))
        seen = seen.__cause__ or seen.__context__
    return None


def hub_login(profile) -> str:
    """Make sure ``profile``'s model can be downloaded, before anything is loaded; returns what it found.

    Local models (tiny) and config-built ones (shapes) need no hub. For a hub id: find a token,
    check access with ``huggingface_hub.auth_check`` (one small request, no download), and put the
    token in ``HF_TOKEN`` so that ``from_pretrained`` uses it.
    """
    if profile.model_config or Path(profile.model_id).exists():
        return "no hub access needed: the model is local"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return "offline (HF_HUB_OFFLINE=1): the model must already be in the local cache"
    if not (token := find_token()):
        raise RuntimeError(access_steps(profile.model_id, "No Hugging Face token was found."))
    from huggingface_hub import auth_check

    try:
        auth_check(profile.model_id, token=token)
    except Exception as err:
        if (explained := explain_hub_error(err, profile.model_id)) is None:
            raise
        raise explained from err
    os.environ["HF_TOKEN"] = token
    return f"hub access to {profile.model_id}: granted"
