"""Talk to a running service with the SDK: a user, their ratings, a generation job, a rating, forget.

Start the service and make a key first (see docs/service.md):

    unipgen keys create "quickstart" --tenant acme     # prints upg_...
    unipgen serve                                     # http://127.0.0.1:8000

then: python examples/service_quickstart.py http://127.0.0.1:8000 upg_...
"""

import sys

from unipgen.client import Client

url, key = sys.argv[1], sys.argv[2]
with Client(url, api_key=key) as api:
    api.add_items([{"key": "m1", "text": "Alien (1979) — Horror, Sci-Fi"},
                   {"key": "m2", "text": "Toy Story (1995) — Animation, Comedy"}])
    api.create_user("alice")
    api.add_events([{"user": "alice", "type": "rate", "item": "m1", "value": 5, "ts": 1_700_000_000}])
    job = api.generate("alice", "text", "Recommend me a film for tonight", options={"max_new_tokens": 8})
    done = api.wait(job.key)  # the service runs the job; or follow api.job_events(job.key)
    text, media_type = api.artifact_content(done.result["artifacts"][0])
    print(done.status, done.result["plan"]["method"], media_type)
    rating = api.wait(api.generate("alice", "text", "How would I rate Toy Story (1995)?",
                                   options={"scale": [1, 5]}).key)  # scored: one of 1-5, never free text
    print(api.artifact(rating.result["artifacts"][0]).meta["label"]["sources"])  # model, prior, neighbours
    print(api.forget_user("alice").residue)  # [] when nothing is left
