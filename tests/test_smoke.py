def test_execute_prints_and_returns(kernel):
    reply, msgs = kernel.run("print('hi'); 40 + 2")
    assert reply["content"]["status"] == "ok"
    types = [m["msg_type"] for m in msgs]
    assert types[0] == "status" and types[-1] == "status"
    assert "execute_input" in types
    result = [m for m in msgs if m["msg_type"] == "execute_result"][0]
    assert result["content"]["data"]["text/plain"] == "42"
    assert kernel.stdout(reply["parent_header"]["msg_id"]) == "hi\n"


def test_trio_await(trio_kernel):
    reply, msgs = trio_kernel.run("import trio\nawait trio.sleep(0.1)\n'done'")
    assert reply["content"]["status"] == "ok", reply["content"]
