"""What a user's type checker sees through ``cache.wrap()``: instructor's own types.

Runs mypy on a small user file and reads its ``reveal_type`` notes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import semcache

# The package as a user's mypy finds it: an editable install is an import hook mypy cannot follow,
# so the source folder is given; an installed wheel is found through semcache/py.typed.
SOURCE = Path(semcache.__file__).resolve().parents[1]

USER_CODE = """
import asyncio
from typing import Any

import instructor
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel

from semcache import SemanticCache


class User(BaseModel):
    name: str


cache = SemanticCache("cache.db")
client = cache.wrap(instructor.from_openai(OpenAI()))
messages: Any = [{"role": "user", "content": "Jason is 25"}]
reveal_type(client.create(model="gpt-4o-mini", response_model=User, messages=messages))
reveal_type(
    client.create_with_completion(
        model="gpt-4o-mini", response_model=User, messages=messages, semcache_threshold=0.9
    )
)
reveal_type(client.create_partial(model="gpt-4o-mini", response_model=User, messages=messages))
reveal_type(
    client.create_iterable(
        model="gpt-4o-mini", response_model=User, messages=messages, semcache_replay_delay=0.05
    )
)
aclient = cache.wrap(instructor.from_openai(AsyncOpenAI()))


async def main() -> None:
    pending = aclient.create(model="gpt-4o-mini", response_model=User, messages=messages)
    reveal_type(pending)
    pending.close()
    reveal_type(await aclient.create(model="gpt-4o-mini", response_model=User, messages=messages))
    pair = await aclient.create_with_completion(
        model="gpt-4o-mini", response_model=User, messages=messages, semcache_ttl=60.0
    )
    reveal_type(pair)
    reveal_type(aclient.create_partial(model="gpt-4o-mini", response_model=User, messages=messages))
    async for item in aclient.create_iterable(
        model="gpt-4o-mini", response_model=User, messages=messages
    ):
        reveal_type(item)


client.create(model="gpt-4o-mini", response_model=User, messages=messages, semcache_read=False)
asyncio.run(main())
"""


@pytest.mark.slow
def test_a_users_type_checker_sees_the_response_model(tmp_path: Path) -> None:
    user_file = tmp_path / "user.py"
    user_file.write_text(USER_CODE)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "mypy", "--no-incremental", "--strict"),
            # reveal_type(coroutine) is itself an unused coroutine to mypy
            *("--disable-error-code", "unused-coroutine", str(user_file)),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(SOURCE)},
    )
    revealed = re.findall(r'Revealed type is "([^"]+)"', result.stdout)
    assert revealed == [
        "user.User",
        "tuple[user.User, Any]",
        "typing.Generator[user.User, None, None]",
        "typing.Generator[user.User, None, None]",
        "typing.Coroutine[Any, Any, user.User]",
        "user.User",
        "tuple[user.User, Any]",
        "typing.AsyncGenerator[user.User, None]",
        "user.User",
    ], result.stdout
    # Only the user's file counts: semcache's own sources are checked by ``make lint``, with its
    # configuration (a wheel's are not reported to users at all).
    errors = [line for line in result.stdout.splitlines() if line.startswith("user.py:")]
    errors = [line for line in errors if ": error:" in line]
    assert errors == [], result.stdout
