import pytest
import torch as th


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests run in parallel workers on small machines: one thread each avoids oversubscription."""
    th.set_num_threads(1)
