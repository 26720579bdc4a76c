"""``POST /agent/deploy``, its status, and the wallet's projects (seed 003)."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.deploy.auth import CurrentWallet
from hutch.api.deps import ServicesDep, SettingsDep
from hutch.api.envelopes import AgentError
from hutch.build.dockerfile import dockerfile_plan
from hutch.build.plan import PlanError, plan_build
from hutch.build.upload import UploadError, files_from_base64, files_from_zip
from hutch.core.deploys import DeployRequest, PaymentProof, deployment_body
from hutch.core.errors import InvalidInput
from hutch.core.templates.dockerfile import parse as parse_dockerfile
from hutch.payments.receipts import TX_HASH
from hutch.store.models import Project

__all__ = ["router"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": AgentError, "description": "Invalid request body or headers."},
    401: {"model": AgentError, "description": "Bad signature, expired, or nonce reuse."},
    403: {"model": AgentError, "description": "Wrong wallet (not the deployer)."},
    404: {"model": AgentError, "description": "No such project or deployment."},
    429: {"model": AgentError, "description": "Rate limited (30 requests/minute)."},
    503: {"model": AgentError, "description": "A chain, the proxy or the store is down."},
}
router = APIRouter(tags=["deploy"], responses=_ERRORS)

NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{2,30})[a-z0-9]$"
RUNTIMES = ("build-ai", "node", "python", "static")


class DeploySettingsIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    port: int = Field(default=3000, ge=1, le=65535, description="The port the app listens on.")
    runtime: str = Field(default="build-ai", max_length=32, description=" | ".join(RUNTIMES))
    useBuildAI: bool = True
    buildCommand: str | None = Field(default=None, max_length=4096)
    runCommand: str | None = Field(default=None, max_length=4096)
    installCommand: str | None = Field(default=None, max_length=4096)
    framework: str | None = Field(default=None, max_length=64)
    hasDockerfile: bool = Field(
        default=False,
        description="Build from the upload's Dockerfile (also done unasked when the "
        "Dockerfile is all there is to go on).",
    )


class FileIn(BaseModel):
    path: str = Field(max_length=1024)
    content: str = Field(description="The file's bytes, base64.")


class UploadIn(BaseModel):
    type: Literal["files", "zip"]
    files: list[FileIn] | None = Field(default=None, description="For type files.")
    content: str | None = Field(default=None, description="For type zip: the zip, base64.")


class DeployIn(BaseModel):
    uniqueName: str = Field(
        min_length=4,
        max_length=32,
        pattern=NAME_PATTERN,
        description="Lower-case letters, digits and inner hyphens.",
    )
    displayName: str = Field(min_length=4, max_length=100)
    description: str | None = Field(default=None, min_length=4, max_length=2048)
    months: int = Field(default=1, ge=1, le=120)
    settings: DeploySettingsIn = Field(default_factory=DeploySettingsIn)
    upload: UploadIn


class DeployOut(BaseModel):
    projectId: str
    deploymentId: str
    status: Literal["deploying"] = "deploying"
    message: str = "Deployment started. Poll status for updates."


class QuoteOut(BaseModel):
    """The 402 body: pay ``amount_token`` of ``token`` on ``payment_chain`` to ``pay_to``."""

    error: str
    amount_usd: float
    amount_token: str
    current_credit_balance_usd: float
    active_projects: int
    pay_to: str
    payment_chain: str
    token: str
    decimals: int
    supported_chains: list[dict[str, Any]]
    warning: str | None = None
    reason: str | None = None


class StatusOut(BaseModel):
    status: Literal["deploying", "ready", "failed"]
    deployment_id: str
    deployment_status: str | None = None
    endpoint: str | None = None
    reason: str | None = None


class ProjectOut(BaseModel):
    id: str
    name: str
    displayName: str
    status: str
    url: str | None
    createdAt: str


class ProjectsOut(BaseModel):
    wallet: str
    count: int
    projects: list[ProjectOut]


class DeletedOut(BaseModel):
    projectId: str
    status: Literal["deleted"] = "deleted"


def _request(body: DeployIn, max_bytes: int) -> DeployRequest:
    """Everything about the body that can be wrong, found before anything is charged."""
    s = body.settings
    if s.runtime not in RUNTIMES:
        raise InvalidInput(
            f"runtime must be one of {', '.join(RUNTIMES)}", field="settings.runtime"
        )
    if not s.useBuildAI and not s.runCommand and not s.hasDockerfile:
        raise InvalidInput(
            "without build-ai (useBuildAI false) settings.runCommand is needed",
            field="settings.runCommand",
        )
    try:
        if body.upload.type == "files":
            if body.upload.files is None:
                raise InvalidInput("an upload of type files needs files", field="upload.files")
            files = files_from_base64(
                ((f.path, f.content) for f in body.upload.files), max_bytes=max_bytes
            )
        else:
            if not body.upload.content:
                raise InvalidInput(
                    "an upload of type zip needs content (the zip, base64)", field="upload.content"
                )
            files = files_from_zip(body.upload.content, max_bytes=max_bytes)
    except UploadError as exc:
        raise InvalidInput(str(exc), field=exc.field) from exc
    hint = s.framework or (s.runtime if s.runtime != "build-ai" else None)
    try:
        project = dockerfile_plan(files, asked=s.hasDockerfile, run=s.runCommand)
        if project is None:
            plan = plan_build(files, install=s.installCommand, build=s.buildCommand,
                              run=s.runCommand, framework=hint)  # fmt: skip
        else:
            plan = project.plan
            parse_dockerfile(project.dockerfile)  # a bad one is a 400 naming its line
    except PlanError as exc:
        raise InvalidInput(str(exc), field="upload") from exc
    except InvalidInput as exc:
        raise InvalidInput(f"Dockerfile: {exc.message}", field="upload") from exc
    return DeployRequest(
        dockerfile=project.dockerfile if project is not None else None,
        unique_name=body.uniqueName,
        display_name=body.displayName,
        description=body.description,
        months=body.months,
        port=s.port,
        plan=plan,
        files=files,
    )


@router.post(
    "/deploy",
    summary="Deploy a project; 402 with a quote when it must be paid for first",
    responses={
        402: {"model": QuoteOut, "description": "Payment required or not verified."},
        409: {"model": AgentError, "description": "Transaction hash already used."},
    },
)
async def deploy(
    body: DeployIn,
    wallet: CurrentWallet,
    services: ServicesDep,
    settings: SettingsDep,
    x_payment_tx: Annotated[str | None, Header(description="ERC-20 transfer tx hash.")] = None,
    x_payment_chain: Annotated[str, Header(max_length=32)] = "arbitrum",
    x_payment_token: Annotated[str, Header(max_length=16)] = "usdc",
    x_use_existing_credits: Annotated[str, Header(max_length=8)] = "false",
) -> DeployOut:
    request = _request(body, settings.deploy_max_unpacked_bytes)
    chain, token = x_payment_chain.lower(), x_payment_token.lower()
    proof = None
    if x_payment_tx is not None:
        if not TX_HASH.fullmatch(x_payment_tx):
            raise InvalidInput("X-Payment-Tx must be 0x and 64 hex digits", field="X-Payment-Tx")
        proof = PaymentProof(tx_hash=x_payment_tx, chain=chain, token=token)
    use_existing = x_use_existing_credits.strip().lower()
    if use_existing not in ("true", "false"):
        raise InvalidInput(
            "X-Use-Existing-Credits must be true or false", field="X-Use-Existing-Credits"
        )
    started = await services.deploys.deploy(
        wallet,
        request,
        payment=proof,
        use_existing_credits=use_existing == "true",
        chain=chain,
        token=token,
    )
    return DeployOut(projectId=started.project_id, deploymentId=started.deployment_id)


@router.get(
    "/deploy/{project_id}/{deployment_id}/status",
    summary="A deployment's progress: deploying, ready (with its endpoint) or failed",
    response_model_exclude_none=True,
)
async def status(
    project_id: str, deployment_id: str, wallet: CurrentWallet, services: ServicesDep
) -> StatusOut:
    view = await services.deploys.status(wallet, project_id[:64], deployment_id[:64])
    return StatusOut(**deployment_body(view))


def _project_out(project: Project) -> ProjectOut:
    created = project.created_at.astimezone(UTC)
    return ProjectOut(
        id=project.id,
        name=project.unique_name,
        displayName=project.display_name,
        status=project.status,
        url=project.url,
        createdAt=created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond // 1000:03d}Z",
    )


@router.get("/projects", summary="The signing wallet's projects, with their live URLs")
async def projects(wallet: CurrentWallet, services: ServicesDep) -> ProjectsOut:
    rows = await services.deploys.projects(wallet)
    return ProjectsOut(wallet=wallet, count=len(rows), projects=[_project_out(p) for p in rows])


@router.delete("/projects/{project_id}", summary="Stop and delete a project (deployer only)")
async def delete_project(
    project_id: str, wallet: CurrentWallet, services: ServicesDep
) -> DeletedOut:
    await services.deploys.delete(wallet, project_id[:64])
    return DeletedOut(projectId=project_id)
