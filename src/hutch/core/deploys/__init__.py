"""Paid deploys (seed 003): a wallet pays in credits, hutch builds and serves its project.

A deploy request is checked whole before anything is charged: the body, the upload (paths,
sizes, zip bombs) and the build plan (:mod:`hutch.build.plan`; a project build-ai cannot
read is a 400, not a failed build). Then the price (USD per month times months, $1 = 100
credits) is met from the wallet's credits or from an on-chain payment presented with the
request, and the charge commits in the same transaction as the project and its
deployment (:mod:`.charges`). The build runs in the background in a fresh sandbox; once
the app answers HTTP on its port, the proxy serves it at ``http://{uniqueName}.{apps
domain}`` (:mod:`.pipeline`). A failed deployment gives its credits back. A redeploy builds
beside the running version and switches over only when the new one is healthy.
:mod:`.service` is what the routes call; :mod:`.records` is the store side.
"""

from hutch.core.deploys.records import (
    DeploymentView,
    DeployRequest,
    PaymentProof,
    Started,
    deployment_body,
)
from hutch.core.deploys.service import DeployService

__all__ = [
    "DeployRequest",
    "DeployService",
    "DeploymentView",
    "PaymentProof",
    "Started",
    "deployment_body",
]
