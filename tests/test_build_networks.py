"""build_model(specs, cfg, encoders=..., decoders=...): user networks replace the defaults."""
import pytest
import torch
from torch import nn

from mmvae import Batch, Config, UserError, build_model
from mmvae.data.dataset import ModalitySpec

SPECS = {"image": ModalitySpec("image", "image", (1, 28, 28), "bernoulli"),
         "label": ModalitySpec("label", "categorical", (10,), "categorical", num_classes=10)}


class CountingEncoder(nn.Module):
    def __init__(self, in_dim: int, latent: int):
        super().__init__()
        self.net = nn.Linear(in_dim, 2 * latent)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x.flatten(1)).chunk(2, dim=-1)


class CountingDecoder(nn.Module):
    def __init__(self, latent: int, shape):
        super().__init__()
        self.shape = tuple(shape)
        self.net = nn.Linear(latent, int(torch.tensor(shape).prod()))
        self.rows = []

    def forward(self, z):
        self.rows.append(z.shape[0])
        return self.net(z).view(z.shape[0], *self.shape)


@pytest.mark.parametrize("model", ["mvae", "mmvae", "mopoe"])
def test_user_networks_are_used_once_per_step(model):
    torch.manual_seed(0)
    enc = {"image": CountingEncoder(784, 4), "label": CountingEncoder(10, 4)}
    dec = {"image": CountingDecoder(4, (1, 28, 28))}
    m = build_model(SPECS, Config(model=model, latent_dim=4), encoders=enc, decoders=dec)
    assert m.encoders["image"] is enc["image"] and m.decoders["image"] is dec["image"]
    assert m.decoders["label"] is not None and not isinstance(m.decoders["label"], CountingDecoder)
    x = torch.rand(8, 1, 28, 28)
    y = torch.nn.functional.one_hot(torch.arange(8) % 10, 10).float()
    loss, _ = m.loss(Batch({"image": x, "label": y}))
    loss.backward()
    # each encoder once per step; the image decoder once, on every stratum that scores the image
    assert enc["image"].calls == 1 and enc["label"].calls == 1
    assert len(dec["image"].rows) == 1
    assert enc["image"].net.weight.grad is not None and dec["image"].net.weight.grad is not None


def test_networks_for_unknown_modality_are_rejected():
    with pytest.raises(UserError, match="unknown modalities"):
        build_model(SPECS, Config(model="mopoe"), encoders={"text": nn.Linear(3, 3)})
