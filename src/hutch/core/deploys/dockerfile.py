"""A deploy's Dockerfile, built as a template of the deploying wallet's user.

The project's files are the build context; the template is ``deploy-<uniqueName>`` (a new
version per deploy; older versions are deleted once a newer one serves). The build is the
templates' own (:mod:`hutch.core.templates`): every step in a sandbox, the layer cache,
``HUTCH_BUILD_ENV``; the deploy waits for it within ``HUTCH_DEPLOY_BUILD_TIMEOUT_S`` and
fails with the build's reason and last log lines, or cancels it when the deploy stops.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib

from hutch.build.upload import to_tar
from hutch.core.deploys.records import BuildFailed, DeployRequest, tail
from hutch.core.errors import HutchError
from hutch.core.identity import Principal
from hutch.core.templates.service import TemplateService, TemplateSubmit
from hutch.store import templates as store
from hutch.store.models import TemplateRecord

__all__ = ["DockerfileBuilds", "template_name"]

_POLL_S = 0.5


def template_name(unique_name: str) -> str:
    return f"deploy-{unique_name}"


class DockerfileBuilds:
    def __init__(self, templates: TemplateService) -> None:
        self._templates = templates

    async def build(
        self, principal: Principal, request: DeployRequest, *, timeout_s: float
    ) -> TemplateRecord:
        """Build the project's Dockerfile; return the ready template. Raises BuildFailed
        (the build failed, was cancelled, or took longer than ``timeout_s``) or the
        template service's errors (a FROM that does not resolve, a context over the cap)."""
        assert request.dockerfile is not None
        context = base64.b64encode(to_tar(request.files)).decode()
        record = await self._templates.create(
            principal,
            TemplateSubmit(
                name=template_name(request.unique_name),
                dockerfile=request.dockerfile,
                context=context,
            ),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while True:
                current = await self._templates.get(principal, record.id)
                if current.status == store.READY:
                    return current
                if current.status in store.FINAL:
                    log = await self._templates.logs(principal, record.id, attempt=None)
                    raise BuildFailed(
                        f"build error: the Dockerfile build {current.status}: {current.reason}; "
                        f"last lines:\n{tail(log)}"
                    )
                if loop.time() >= deadline:
                    raise BuildFailed(f"the build did not finish within {timeout_s:g} s")
                await asyncio.sleep(_POLL_S)
        except BaseException:
            with contextlib.suppress(HutchError):
                await asyncio.shield(self._templates.cancel(principal, record.id))
            raise

    async def forget_older(self, principal: Principal, keep: TemplateRecord) -> None:
        """Delete the versions of ``keep``'s name older than it (their sandboxes are gone)."""
        records, _ = await self._templates.list_templates(principal, limit=500, offset=0)
        for record in records:
            if record.name == keep.name and record.version < keep.version:
                with contextlib.suppress(HutchError):
                    await self._templates.delete(principal, record.id)
