"""Message ids (``convergence.message.new_id``): unique per process and per forked child."""
import os

from convergence.message import new_id


def test_ids_increase_within_a_process_and_differ_in_a_forked_child():
    """Ids are a per-process random prefix and a counter. A child forked after the module was
    imported (the test kit's fork server forks every server that way) draws its own prefix:
    two cluster nodes forked from one parent must not hand out the same ids."""
    first, second = new_id(), new_id()
    assert first != second and first[:16] == second[:16]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, to the parent
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    assert child[:16] != first[:16]
    assert new_id()[:16] == first[:16]  # the parent's own prefix is unchanged
