from billfold.http.responses import dumps, json_response


def test_json_response_headers_and_body() -> None:
    resp = json_response({"a": "é", "n": None}, status=201, headers={"X-Test": "1"})
    assert resp.status == 201
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert resp.headers["X-Test"] == "1"
    assert resp.body == '{"a":"é","n":null}'.encode()


def test_dumps_falls_back_for_what_orjson_refuses() -> None:
    assert dumps({"big": 2**70}) == b'{"big":1180591620717411303424}'
    assert dumps({1: "x"}) == b'{"1":"x"}'
