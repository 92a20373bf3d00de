import gc

from lab import compile_cache


class Owner:
    pass


def test_built_once_per_owner_and_key_and_dropped_with_the_owner():
    builds = []
    build = lambda: builds.append(1) or (lambda: len(builds))
    owner = Owner()
    first = compile_cache.cached_function(owner, "a", build)
    assert compile_cache.cached_function(owner, "a", build) is first
    assert compile_cache.cached_function(owner, "b", build) is not first
    assert compile_cache.cached_function(Owner(), "a", build) is not first
    assert len(builds) == 3
    size = len(compile_cache._CACHE)
    del owner
    gc.collect()
    assert len(compile_cache._CACHE) < size


def test_owners_without_weak_references_still_work():
    builds = []
    build = lambda: builds.append(1) or len
    compile_cache.cached_function(3, "a", build)
    compile_cache.cached_function(3, "a", build)
    assert len(builds) == 2
