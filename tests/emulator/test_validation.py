"""What each api-version refuses: identifiers, required fields, field types and enum values, routes it lacks.

Run against the emulator and, with ``AZURE_SESSIONS_LIVE_ENDPOINT``, against a real pool (``service``): the status
and the Azure error shape are the service's (its specification), the error's code, ``target`` and wording are the
emulator's own and are checked only there.
"""

from __future__ import annotations

import pytest
import requests

from azure_sessions.dialects import API_VERSIONS, ENVELOPE_VERSIONS, RESOURCE_VERSIONS, SUPPORTED_API_VERSIONS
from tests.emulator.conftest import Api, new_id

STRICT_VERSIONS = [v for v, traits in API_VERSIONS.items() if traits.typed_fields]
FULL_BODY = {"codeInputType": "Inline", "executionType": "Synchronous", "code": "print(1)", "timeoutInSeconds": 30}


def refused(service: Api, response: requests.Response, status: int = 400, names: str | None = None) -> dict:
    """The reply is an Azure error with ``status``; on the emulator, it names ``names`` in its message and target."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"]
    assert response.headers.get("x-ms-error-code") == error["code"]
    if names is not None and not service.live:
        assert names in error["message"], error
        assert error.get("target") == names, error
    return error


def post_execution(service: Api, version: str, body: dict, identifier: str | None = None) -> requests.Response:
    identifier = identifier or new_id()
    if version in ENVELOPE_VERSIONS:
        return service.request("POST", "code/execute", identifier, version, json={"properties": body})
    return service.request("POST", "executions", identifier, version, json=body)


# -- identifiers ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", SUPPORTED_API_VERSIONS)
@pytest.mark.parametrize(
    "identifier",
    ["abc", "x" * 129, "has space", "ünïcode-1", "back\\slash"],
    ids=["3 chars", "129 chars", "space", "non-ASCII", "backslash"],
)
def test_identifiers_outside_the_rule_are_refused(service, version, identifier):
    refused(service, service.request("GET", "files", identifier, version), names="identifier")


@pytest.mark.parametrize("version", SUPPORTED_API_VERSIONS)
def test_identifiers_inside_the_rule_are_served(service, version):
    for identifier in ("abcd", "x" * 128, "a|b-c&d^e%f$g#(h){i}[j];k<l>", "a_b.c@d:e/f?g*h+i=j!k~l`m,n"):
        response = service.request("GET", "files", identifier, version)
        assert response.status_code == 200, (identifier, response.text)


# -- required fields, types and enum values ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("version", "field"), [(v, f) for v, traits in API_VERSIONS.items() for f in traits.required_fields]
)
def test_each_required_field_is_required(service, version, field):
    body = {k: v for k, v in FULL_BODY.items() if k != field}
    refused(service, post_execution(service, version, body), names=field)


@pytest.mark.parametrize("version", ENVELOPE_VERSIONS)
def test_the_envelope_needs_only_the_code(service, version):
    """LangChain, AutoGen and LlamaIndex send no timeoutInSeconds; the 2024-02 envelope does not require it."""
    response = post_execution(service, version, {"code": "6 * 7"})
    assert response.status_code == 200 and response.json()["properties"]["result"] == 42


def test_2025_10_requires_only_the_timeout(service):
    response = post_execution(service, "2025-10-02-preview", {"code": "6 * 7", "timeoutInSeconds": 30})
    assert response.status_code == 200 and response.json()["result"]["executionResult"] == 42


@pytest.mark.parametrize("version", SUPPORTED_API_VERSIONS)
@pytest.mark.parametrize(
    ("field", "value"),
    [("codeInputType", "Weird"), ("executionType", "Eventually"), ("timeoutInSeconds", "soon")],
)
def test_values_outside_an_enum_or_type_are_refused(service, version, field, value):
    refused(service, post_execution(service, version, {**FULL_BODY, field: value}), names=field)


@pytest.mark.parametrize("version", STRICT_VERSIONS)
@pytest.mark.parametrize("value", ["30", 30.5, True])
def test_a_timeout_must_be_an_integer_where_the_spec_types_it(service, version, value):
    refused(
        service, post_execution(service, version, {**FULL_BODY, "timeoutInSeconds": value}), names="timeoutInSeconds"
    )


@pytest.mark.parametrize("version", ENVELOPE_VERSIONS)
def test_the_envelope_reads_a_numeric_timeout_liberally(service, version):
    response = post_execution(service, version, {**FULL_BODY, "timeoutInSeconds": "30"})
    assert response.status_code == 200 and response.json()["properties"]["stdout"] == "1\n"


@pytest.mark.parametrize("version", SUPPORTED_API_VERSIONS)
def test_enum_values_in_any_letter_case(service, version):
    """The live service accepted ``inline``/``synchronous`` (the Azure CLI's recording)."""
    for casing in (str.lower, str.upper, lambda text: text):
        body = {**FULL_BODY, "codeInputType": casing("Inline"), "executionType": casing("Synchronous")}
        assert post_execution(service, version, body).status_code in (200, 202)


@pytest.mark.parametrize("version", SUPPORTED_API_VERSIONS)
def test_shell_pool_fields_are_refused_by_a_python_pool(service, version):
    refused(service, post_execution(service, version, {"shellCommand": "ls", "timeoutInSeconds": 30}))


# -- routes a version does not have ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "version"),
    [
        ("POST", "executions", "2024-02-02-preview"),  # the resource dialect's route under the envelope
        ("POST", "code/execute", "2024-10-02-preview"),  # the envelope's route under the resource dialect
        ("POST", "files/upload", "2025-10-02-preview"),
        ("GET", "files/content/x.txt", "2025-02-02-preview"),  # a file named "content/x.txt" there: not found
        ("GET", "session", "2024-10-02-preview"),  # session routes arrived in 2025-02-02-preview
        ("DELETE", "session", "2024-08-02-preview"),
        ("GET", "listSessions", "2024-10-02-preview"),
        ("GET", "metadata", "2024-02-02-preview"),
        ("POST", ".management/stopSession", "2025-02-02-preview"),
    ],
)
def test_a_route_the_version_lacks_is_not_served(service, method, path, version):
    body = {"properties": FULL_BODY} if path == "executions" else FULL_BODY
    response = service.request(method, path, new_id(), version, json=body if method == "POST" else None)
    error = refused(service, response, 404)
    if not service.live and path != "files/content/x.txt":
        assert error["code"] == "OperationNotSupportedInApiVersion" and version in error["message"]


@pytest.mark.parametrize("version", [v for v in RESOURCE_VERSIONS if API_VERSIONS[v].serves("GET session")])
def test_session_routes_from_2025_02(service, version):
    identifier = new_id()
    assert service.request("GET", "files", identifier, version).status_code == 200
    assert service.request("GET", "session", identifier, version).status_code == 200
    assert service.request("DELETE", "session", identifier, version).status_code == 204
