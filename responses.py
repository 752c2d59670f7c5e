"""JSON responses encoded once, with orjson (UTC datetimes end in `Z`)."""
from typing import Any

import orjson
from starlette.responses import JSONResponse

ORJSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def to_json(content: Any) -> bytes:
    return orjson.dumps(content, option=ORJSON_OPTIONS)


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return to_json(content)
