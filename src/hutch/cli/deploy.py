"""``hutch deploy``: send a project directory to ``POST /agent/deploy``, pay when the server
asks (a 402 quote), and follow the deployment until it is ready or has failed.

Every request is signed by a wallet (EIP-191 ``personal_sign`` of
``{wallet}:{timestamp}:{nonce}``, see :mod:`hutch.core.wallets`); no API key is involved.
Paying is an ERC-20 ``transfer`` to the quote's ``pay_to``, sent from the same wallet over
``--rpc-url`` and proven to the server by its transaction hash.
"""

from __future__ import annotations

import base64
import io
import os
import re
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console

from hutch.cli.common import fail
from hutch.cli.output import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    ApiUrlOpt,
    JsonOpt,
    print_json,
    stderr_is_tty,
)
from hutch.payments.signing import signed_text
from hutch.sdk._config import DEFAULT_API_URL

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = ["deploy", "pack"]

SKIPPED_DIRS = frozenset({".git", "node_modules", ".venv", "__pycache__"})
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{2,30}[a-z0-9]$")
POLL_S = 3.0  # /agent allows 30 requests a minute per wallet
CONFIRMATION_TRIES = 60
RECEIPT_TIMEOUT_S = 300
_ERC20_ABI: list[dict[str, Any]] = [
    {"name": "transfer", "type": "function", "stateMutability": "nonpayable",
     "inputs": [{"name": "to", "type": "address"}, {"name": "value", "type": "uint256"}],
     "outputs": [{"name": "", "type": "bool"}]},
    {"name": "balanceOf", "type": "function", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}],
     "outputs": [{"name": "", "type": "uint256"}]},
]  # fmt: skip


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def deploy(
    directory: Annotated[
        Path,
        typer.Argument(exists=True, file_okay=False, help="The project to deploy."),
    ],
    name: Annotated[
        str | None,
        typer.Option("--name", help="Its unique name (4-32 of a-z, 0-9, -); default the dir's."),
    ] = None,
    display_name: Annotated[
        str | None, typer.Option("--display-name", help="Default: the name.")
    ] = None,
    months: Annotated[int, typer.Option("--months", min=1, max=120, help="Months paid for.")] = 1,
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="The port the app listens on.")
    ] = 3000,
    run_command: Annotated[
        str | None, typer.Option("--run-command", help="How to start it; default: detected.")
    ] = None,
    framework: Annotated[
        str | None, typer.Option("--framework", help="A hint: node, next, fastapi, static…")
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            dir_okay=False,
            help="A file holding the wallet's private key (hex); else env HUTCH_WALLET_KEY.",
        ),
    ] = None,
    chain: Annotated[str, typer.Option("--chain", help="The chain to pay on.")] = "arbitrum",
    token: Annotated[str, typer.Option("--token", help="The token to pay in.")] = "usdc",
    payment_tx: Annotated[
        str | None,
        typer.Option("--payment-tx", help="The hash of a transfer you already sent."),
    ] = None,
    use_credits: Annotated[
        bool,
        typer.Option("--use-credits", help="Spend credits even if other projects are active."),
    ] = False,
    pay: Annotated[
        bool, typer.Option("--pay", help="Send the quoted payment from the wallet (--rpc-url).")
    ] = False,
    rpc_url: Annotated[
        str | None, typer.Option("--rpc-url", help="An RPC endpoint of --chain, for --pay.")
    ] = None,
    token_address: Annotated[
        str | None,
        typer.Option("--token-address", help="The token's contract; default: asked of hutch."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the deployment until it ends.")
    ] = True,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
) -> None:
    """Deploy a directory as a web app, paid per month in USDC or USDT from a wallet.

    The directory is zipped (without .git, node_modules, .venv and
    __pycache__), and every request is signed with the wallet's key.
    When payment is due, the quote is printed and the command exits 1,
    unless --pay sends the payment (or --payment-tx names one already sent).
    Then it follows the deployment and prints its URL once it is ready.

    Example:  hutch deploy ./my-app --key-file wallet.key --months 3
              --pay --rpc-url https://arb1.arbitrum.io/rpc
    """
    if pay and not rpc_url:
        fail(
            "--pay sends the payment itself and needs --rpc-url",
            hint="pass --rpc-url with an RPC endpoint of the chain",
            code=EXIT_USAGE,
        )
    wallet = _wallet(key_file)
    unique = name or _default_name(directory)
    payload: dict[str, Any] = {
        "uniqueName": unique,
        "displayName": display_name or unique,
        "months": months,
        "settings": {"port": port},
        "upload": {"type": "zip", "content": pack(directory)},
    }
    if run_command:
        payload["settings"]["runCommand"] = run_command
    if framework:
        payload["settings"]["framework"] = framework
    headers = {"X-Payment-Chain": chain, "X-Payment-Token": token}
    if use_credits:
        headers["X-Use-Existing-Credits"] = "true"
    if payment_tx:
        headers["X-Payment-Tx"] = payment_tx
    url = (api_url or os.environ.get("HUTCH_API_URL") or DEFAULT_API_URL).rstrip("/")
    with httpx.Client(base_url=url, timeout=120) as http:
        agent = _Agent(http, wallet, url)
        answer = agent.send("POST", "/agent/deploy", json=payload, headers=headers)
        if answer.status_code == 402:
            quote: dict[str, Any] = answer.json()
            if not pay:
                _refuse(quote, unique, as_json=as_json)
            assert rpc_url is not None
            paid = _pay(agent, quote, rpc_url=rpc_url, token_address=token_address)
            answer = _deploy_paid(agent, payload, headers | {"X-Payment-Tx": paid})
            if answer.status_code == 402:
                _refuse(answer.json(), unique, as_json=as_json)
        started = agent.data(answer)
        if not wait:
            _finish(started, as_json=as_json)
            return
        _finish(_follow(agent, started, unique), as_json=as_json)


# --- the request --------------------------------------------------------------------------


def _wallet(key_file: Path | None) -> LocalAccount:
    from hutch.payments.eth import Account

    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as exc:
            fail(f"cannot read {key_file}: {exc.strerror}", hint="check --key-file", code=EXIT_AUTH)
    else:
        key = os.environ.get("HUTCH_WALLET_KEY", "").strip()
    if not key:
        fail(
            "no wallet key to sign the deploy with",
            hint="pass --key-file FILE (a hex private key) or set HUTCH_WALLET_KEY",
            code=EXIT_AUTH,
        )
    try:
        account: LocalAccount = Account.from_key(key)
    except Exception:  # eth_account raises several kinds for a malformed key
        fail(
            "the wallet key is not a private key (64 hex digits)",
            hint="check --key-file or HUTCH_WALLET_KEY",
            code=EXIT_AUTH,
        )
    return account


def _default_name(directory: Path) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", directory.resolve().name.lower()).strip("-")[:32]
    name = name.strip("-")
    if not NAME.fullmatch(name):
        fail(
            f"{directory.resolve().name!r} does not make a project name",
            hint="pass --name: 4-32 of a-z, 0-9 and inner hyphens",
            code=EXIT_USAGE,
        )
    return name


def pack(directory: Path) -> str:
    """The directory's files as a base64 zip, under one top folder (which the server takes
    off again, so paths arrive exactly as they are here)."""
    buffer = io.BytesIO()
    count = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in _files(directory):
            archive.write(path, "app/" + path.relative_to(directory).as_posix())
            count += 1
    if not count:
        fail(f"{directory} holds no files to deploy", hint="point hutch deploy at the project")
    size = buffer.tell()
    plural = "" if count == 1 else "s"
    _err().print(f"[dim]packed {count} file{plural} ({size / 1024:.1f} KiB zipped)[/dim]")
    return base64.b64encode(buffer.getvalue()).decode()


def _files(directory: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            path = Path(root) / name
            if path.is_file():
                yield path


class _Agent:
    """Signed requests to ``/agent``, and the errors they can end in."""

    def __init__(self, http: httpx.Client, wallet: LocalAccount, url: str) -> None:
        self.http = http
        self.wallet = wallet
        self.url = url

    def headers(self) -> dict[str, str]:
        from hutch.payments.eth import encode_defunct

        address = self.wallet.address
        timestamp = str(int(time.time() * 1000))
        nonce = str(uuid.uuid4())
        signed = self.wallet.sign_message(
            encode_defunct(text=signed_text(address, timestamp, nonce))
        )
        signature = "0x" + bytes(signed.signature).hex().removeprefix("0x")
        return {
            "X-Wallet-Address": address,
            "X-Signature": signature,
            "X-Timestamp": timestamp,
            "X-Nonce": nonce,
        }

    def send(self, method: str, path: str, **options: Any) -> httpx.Response:
        """Sign and send; on 429 wait as told and send again (signed anew)."""
        extra = options.pop("headers", {})
        for _ in range(10):
            try:
                answer = self.http.request(
                    method, path, headers={**self.headers(), **extra}, **options
                )
            except httpx.TransportError as exc:
                fail(
                    f"cannot reach hutch at {self.url} ({type(exc).__name__})",
                    hint="is `hutch serve` running there? Set HUTCH_API_URL (or --api-url)",
                )
            if answer.status_code != 429:
                return answer
            time.sleep(float(answer.headers.get("retry-after", "5") or 5))
        return answer

    def data(self, answer: httpx.Response) -> dict[str, Any]:
        """The body of a 2xx answer; any other ends the program with the server's words."""
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.is_success and isinstance(body, dict):
            return body
        self.refused(answer, body)

    def refused(self, answer: httpx.Response, body: Any) -> NoReturn:
        error = body.get("error") if isinstance(body, dict) else None
        message = error if isinstance(error, str) else answer.text[:300] or answer.reason_phrase
        field = body.get("field") if isinstance(body, dict) else None
        status = answer.status_code
        code = {401: EXIT_AUTH, 403: EXIT_AUTH, 404: EXIT_NOT_FOUND}.get(status, EXIT_ERROR)
        hint = {
            401: "check the wallet key, and that this machine's clock is right (±60 s)",
            403: "only the wallet that deployed a project may change it",
            409: "that transaction already paid; run again without --payment-tx to spend "
            "the credits it bought",
            429: "wait a minute and run again",
            503: "try again shortly",
        }.get(status)
        if field and field not in message:
            message = f"{field}: {message}"
        if not hint:
            hint = f"correct {field} and run again" if field else "see hutch deploy --help"
        fail(f"{message} (HTTP {status})", hint=hint, code=code)


# --- paying -------------------------------------------------------------------------------


def _refuse(quote: dict[str, Any], name: str, *, as_json: bool) -> NoReturn:
    """Show the quote, and how to pay it; exit 1."""
    if as_json:
        print_json(quote)
    else:
        sys.stdout.write(_describe_quote(quote, name))
    if quote.get("reason"):
        fail(
            f"the payment was not accepted: {quote['reason']}",
            hint="send a transfer that covers the quote, then pass its hash with --payment-tx",
        )
    fail(
        "payment required",
        hint="pay as shown above, then run again with --payment-tx "
        "HASH; or let hutch pay with --pay --rpc-url URL",
    )


def _describe_quote(quote: dict[str, Any], name: str) -> str:
    decimals = int(quote.get("decimals", 6))
    raw = int(quote.get("amount_token", 0))
    token = str(quote.get("token", "")).upper()
    chain = str(quote.get("payment_chain", ""))
    chain_id = _chain_id(quote)
    amount = Decimal(raw) / (10**decimals)
    lines = [
        f"Payment required to deploy {name}:",
        f"  amount    {amount:.{decimals}f} {token}  (${quote.get('amount_usd', 0):.2f}; "
        f"{raw} base units, {decimals} decimals)",
        f"  token     {token}",
        f"  chain     {chain}" + (f" (chain id {chain_id})" if chain_id else ""),
        f"  pay to    {quote.get('pay_to', '')}",
        f"  balance   ${float(quote.get('current_credit_balance_usd', 0)):.2f} in credits; "
        f"{quote.get('active_projects', 0)} active project(s)",
    ]
    if quote.get("warning"):
        lines.append(f"  warning   {quote['warning']}")
    if quote.get("reason"):
        lines.append(f"  reason    {quote['reason']}")
    lines += [
        "",
        f"To pay, send {amount:.{decimals}f} {token} on {chain} to {quote.get('pay_to', '')},",
        "then run this command again with --payment-tx TRANSACTION_HASH; or let hutch send it",
        "from this wallet: --pay --rpc-url URL (an RPC endpoint of that chain).",
        "",
    ]
    return "\n".join(lines)


def _chain_id(quote: dict[str, Any]) -> int | None:
    for known in quote.get("supported_chains") or []:
        if isinstance(known, dict) and known.get("chain") == quote.get("payment_chain"):
            chain_id = known.get("chain_id")
            return chain_id if isinstance(chain_id, int) else None
    return None


def _token_contract(agent: _Agent, chain: str, token: str) -> str:
    answer = agent.http.get(f"/agent/balance/{agent.wallet.address}", params={"chain": chain})
    body = _json(answer)
    for balance in body.get("balances") or []:
        if balance.get("token") == token and isinstance(balance.get("address"), str):
            return str(balance["address"])
    said = body.get("error") or f"HTTP {answer.status_code}"
    fail(
        f"hutch cannot tell the {token} contract on {chain}: {said}",
        hint="pass the token's address with --token-address",
    )


def _pay(agent: _Agent, quote: dict[str, Any], *, rpc_url: str, token_address: str | None) -> str:
    """Send the quoted transfer and wait for its receipt; its transaction hash."""
    from hutch.payments.eth import Web3, Web3Exception

    chain, token = str(quote["payment_chain"]), str(quote["token"])
    amount, pay_to = int(quote["amount_token"]), Web3.to_checksum_address(quote["pay_to"])
    contract_address = Web3.to_checksum_address(
        token_address or _token_contract(agent, chain, token)
    )
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    sender = agent.wallet.address
    try:
        actual = int(w3.eth.chain_id)
        expected = _chain_id(quote)
        if expected is not None and actual != expected:
            fail(
                f"--rpc-url serves chain {actual}, not {chain} ({expected})",
                hint=f"pass an RPC endpoint of {chain}",
            )
        contract = w3.eth.contract(address=contract_address, abi=_ERC20_ABI)
        held = int(contract.functions.balanceOf(sender).call())
        if held < amount:
            fail(
                f"the wallet {sender} holds {held} base units of {token} on {chain}, and "
                f"{amount} are due",
                hint=f"fund the wallet with {token} on {chain}",
            )
        transaction = contract.functions.transfer(pay_to, amount).build_transaction(
            {"from": sender, "nonce": w3.eth.get_transaction_count(sender), "chainId": actual}
        )
        signed = agent.wallet.sign_transaction(transaction)  # type: ignore[arg-type]
        sent = w3.eth.send_raw_transaction(signed.raw_transaction)
        tx_hash = "0x" + bytes(sent).hex().removeprefix("0x")
        _err().print(f"sent {amount} base units of {token} to {pay_to} on {chain}: {tx_hash}")
        with _spinner("waiting for the transaction's receipt"):
            receipt = w3.eth.wait_for_transaction_receipt(sent, timeout=RECEIPT_TIMEOUT_S)
    except (Web3Exception, OSError, ValueError) as exc:
        fail(
            f"cannot pay on {chain}: {type(exc).__name__}: {str(exc)[:200]}",
            hint="check --rpc-url, and that the wallet has gas money on the chain",
        )
    if receipt["status"] != 1:
        fail(f"the transfer {tx_hash} failed on {chain}", hint="check the wallet's balance")
    return tx_hash


def _deploy_paid(agent: _Agent, payload: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    """Deploy with the payment's hash, again while the server waits for confirmations."""
    with _spinner("waiting for hutch to accept the payment") as update:
        for _ in range(CONFIRMATION_TRIES):
            answer = agent.send("POST", "/agent/deploy", json=payload, headers=headers)
            reason = _json(answer).get("reason") or ""
            if answer.status_code != 402 or "confirmation" not in str(reason):
                return answer
            update(f"waiting for confirmations: {reason}")
            time.sleep(POLL_S)
    return answer


# --- following ----------------------------------------------------------------------------


def _follow(agent: _Agent, started: dict[str, Any], name: str) -> dict[str, Any]:
    """Poll the deployment until it is ready (its status) or failed (exit 1)."""
    path = f"/agent/deploy/{started['projectId']}/{started['deploymentId']}/status"
    with _spinner(f"deploying {name}") as update:
        while True:
            status = agent.data(agent.send("GET", path))
            if status.get("status") == "ready":
                return {**started, **status}
            if status.get("status") == "failed":
                break
            update(f"deploying {name}: {status.get('deployment_status') or 'deploying'}")
            time.sleep(POLL_S)
    reason = str(status.get("reason") or "failed").strip()
    first, _, rest = reason.partition("\n")
    first = first.rstrip(": ").removesuffix("; last lines")
    if rest:
        _err().print(f"the end of its log:\n{rest}", markup=False, highlight=False)
    fail(
        f"deployment {started['deploymentId']} failed: {first}",
        hint="fix the project (see the end of its log above) and deploy again"
        if rest
        else "fix the project and deploy again",
    )


def _finish(result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print_json(result)
    elif result.get("endpoint"):
        sys.stdout.write(f"{result['endpoint']}\n")
    else:
        sys.stdout.write(
            f"{result['projectId']} {result['deploymentId']} {result.get('status', 'deploying')}\n"
        )


class _spinner:
    """A rich spinner on stderr when it is a terminal; else one line per new message."""

    def __init__(self, message: str) -> None:
        self._message = message
        self._status = _err().status(message) if stderr_is_tty() else None

    def __enter__(self) -> Callable[[str], None]:
        if self._status is not None:
            self._status.__enter__()
        else:
            _err().print(self._message, markup=False)
        return self.update

    def update(self, message: str) -> None:
        if message == self._message:
            return
        self._message = message
        if self._status is not None:
            self._status.update(message)
        else:
            _err().print(message, markup=False)

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
