"""lit_hpcm.data: reproducible crops, padding, sources and splits, bad files, loaders."""

import warnings

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

from lit_hpcm.data import ImageDataModule
from lit_hpcm.data.datasets import (
    BUNDLED_EVAL_PHOTOS,
    BUNDLED_TRAIN_PHOTOS,
    TrainCrops,
    bundled_photos,
    collate_eval,
    pad_to_size,
    random_crop,
)
from lit_hpcm.data.images import find_images, image_to_tensor
from lit_hpcm.data.loader import EpochTaggedSampler

P = 32  # patch size used throughout: small keeps the tests fast


def _noise(shape, seed=0):
    """uint8 noise of ``shape`` ([H, W] gray, [H, W, 3] RGB, [H, W, 4] RGBA)."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def photo_dir(tmp_path):
    """A folder of small, varied, readable images (modes, formats, a nested one, a 1x1)."""
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    Image.fromarray(_noise((40, 48, 3), seed=1)).save(folder / "rgb.png")
    Image.fromarray(_noise((36, 44), seed=2)).save(folder / "gray.jpg")
    Image.fromarray(_noise((34, 50, 4), seed=3)).save(folder / "alpha.png")
    Image.fromarray(_noise((33, 33, 3), seed=4)).convert("P").save(folder / "nested" / "palette.png")
    Image.fromarray(_noise((20, 30), seed=5).astype(np.uint16) * 257).save(folder / "deep16.png")
    Image.new("RGB", (1, 1), (200, 10, 50)).save(folder / "dot.png")
    return folder


def _add_bad_files(folder):
    """A truncated PNG and a text file with a .png suffix; returns their paths."""
    truncated, text = folder / "zz_truncated.png", folder / "zz_text.png"
    data = (folder / "rgb.png").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    text.write_text("this is not a picture")
    return [truncated, text]


def test_crops_reproducible_per_seed_epoch_index(photo_dir):
    paths = find_images(photo_dir)
    first, second = TrainCrops(paths, P, 12, seed=3), TrainCrops(paths, P, 12, seed=3)
    for index in range(12):
        assert torch.equal(first[(2, index)], second[(2, index)])
    assert not torch.equal(first[(0, 0)], first[(1, 0)])
    assert not torch.equal(first[(0, 0)], TrainCrops(paths, P, 12, seed=4)[(0, 0)])
    first.set_epoch(2)
    assert torch.equal(first[5], second[(2, 5)])


def test_crop_shape_range_and_index_bounds(photo_dir):
    crops = TrainCrops(find_images(photo_dir), P, 7)
    for index in range(7):
        x = crops[index]
        assert x.shape == (3, P, P) and x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1
    with pytest.raises(IndexError):
        crops[7]


def test_random_crop_is_a_window_of_the_image_maybe_flipped():
    img = Image.fromarray(_noise((37, 41, 3)))
    full = image_to_tensor(img)
    for seed in range(5):
        crop = random_crop(img, P, torch.Generator().manual_seed(seed))
        variants = [crop, crop.flip(-1), crop.flip(-2), crop.flip(-1).flip(-2)]
        windows = [full[:, t : t + P, left : left + P] for t in range(37 - P + 1) for left in range(41 - P + 1)]
        assert any(torch.equal(v, w) for v in variants for w in windows)


def test_random_crop_without_flips_is_an_unflipped_window():
    """The Balanced R-D authors' crops: no flips (random_flips: false); some seeds do flip when allowed."""
    img = Image.fromarray(_noise((37, 41, 3)))
    full = image_to_tensor(img)
    windows = [full[:, t : t + P, left : left + P] for t in range(37 - P + 1) for left in range(41 - P + 1)]
    flipped_somewhere = False
    for seed in range(8):
        plain = random_crop(img, P, torch.Generator().manual_seed(seed), flips=False)
        assert any(torch.equal(plain, w) for w in windows)
        maybe = random_crop(img, P, torch.Generator().manual_seed(seed))
        flipped_somewhere |= not any(torch.equal(maybe, w) for w in windows)
    assert flipped_somewhere


def test_pad_to_size_reflects_and_centres():
    x = torch.arange(15, dtype=torch.float32).view(1, 3, 5)
    padded = pad_to_size(x, 8)
    assert padded.shape == (1, 8, 8)
    expected = np.pad(x.numpy(), ((0, 0), (2, 3), (1, 2)), mode="reflect")
    assert np.array_equal(padded.numpy(), expected)
    assert torch.equal(padded[:, 2:5, 1:6], x)
    assert pad_to_size(x, 3) is x


def test_pad_wider_than_image_and_single_pixel():
    row = torch.tensor([[[1.0, 2.0]]])
    assert pad_to_size(row, 6)[0, 0].tolist() == [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]  # keeps reflecting
    assert torch.equal(pad_to_size(torch.full((3, 1, 1), 0.5), P), torch.full((3, P, P), 0.5))


def test_tiny_image_crop_is_replicated_colour(tmp_path):
    Image.new("RGB", (1, 1), (255, 0, 51)).save(tmp_path / "dot.png")
    crop = TrainCrops(find_images(tmp_path), P, 1)[0]
    assert torch.equal(crop, torch.tensor([1.0, 0.0, 0.2]).view(3, 1, 1).expand(3, P, P))


def test_bundled_split_non_empty_disjoint_and_on_disk():
    assert BUNDLED_TRAIN_PHOTOS and BUNDLED_EVAL_PHOTOS
    assert not set(BUNDLED_TRAIN_PHOTOS) & set(BUNDLED_EVAL_PHOTOS)
    assert all(p.is_file() for p in bundled_photos(BUNDLED_TRAIN_PHOTOS + BUNDLED_EVAL_PHOTOS))


def test_no_folders_uses_bundled_photos():
    dm = ImageDataModule(patch_size=P, batch_size=4, num_workers=0)
    dm.setup("fit")
    assert [p.name for p in dm.train_set.paths] == sorted(BUNDLED_TRAIN_PHOTOS)
    assert [dm.val_set[i]["name"] for i in range(len(dm.val_set))] == list(BUNDLED_EVAL_PHOTOS)
    assert len(dm.train_set) == 8  # 6 photos rounded up to whole batches of 4
    dm.setup("test")
    assert dm.test_set.paths == dm.val_set.paths


@pytest.mark.parametrize("split, stage", [("train", "fit"), ("val", "validate"), ("test", "test")])
@pytest.mark.parametrize("empty", [False, True], ids=["missing", "empty"])
def test_missing_or_empty_folder_is_refused_naming_it(tmp_path, split, stage, empty):
    """A missing folder is refused when the module is built (before a run writes anything); an empty one at setup."""
    folder = tmp_path / "images"
    if empty:
        folder.mkdir()
        dm = ImageDataModule(**{f"{split}_dir": str(folder)})
        with pytest.raises(ValueError, match="no image files") as info:
            dm.setup(stage)
        assert str(info.value).startswith(f"{split}_dir: {folder}")
    else:
        with pytest.raises(ValueError, match="no such folder") as info:
            ImageDataModule(**{f"{split}_dir": str(folder)})
        assert str(info.value) == f"{split}_dir {folder}: no such folder"


def test_folders_given_without_val_or_test(photo_dir):
    dm = ImageDataModule(train_dir=str(photo_dir), patch_size=P, num_workers=0)
    dm.setup("fit")
    assert dm.val_set is None and dm.val_dataloader() == []
    with pytest.raises(ValueError, match="test_dir is not set"):
        dm.setup("test")


def test_train_loader_batches_and_epoch_length(photo_dir):
    dm = ImageDataModule(train_dir=str(photo_dir), patch_size=P, batch_size=4, num_workers=0, train_length=10)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(dm.train_set) == 12 and len(loader) == 3
    batches = list(loader)
    assert all(b.shape == (4, 3, P, P) for b in batches)


def test_loader_order_and_crops_independent_of_workers_and_follow_epoch(photo_dir):
    def epoch_batches(num_workers, epoch):
        dm = ImageDataModule(train_dir=str(photo_dir), patch_size=P, batch_size=3, num_workers=num_workers, seed=7)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return torch.cat(list(loader))

    assert torch.equal(epoch_batches(0, 1), epoch_batches(2, 1))
    assert not torch.equal(epoch_batches(0, 0), epoch_batches(0, 1))


def test_sampler_shards_one_global_order():
    shards = [list(EpochTaggedSampler(range(8), num_replicas=2, rank=r, seed=1)) for r in (0, 1)]
    assert all(epoch == 0 for shard in shards for epoch, _ in shard)
    assert sorted(i for shard in shards for _, i in shard) == list(range(8))


def test_bad_training_files_skipped_counted_and_reported(photo_dir):
    bad = _add_bad_files(photo_dir)
    dm = ImageDataModule(train_dir=str(photo_dir), patch_size=P, batch_size=4, num_workers=2, train_length=16)
    dm.setup("fit")
    assert sum(b.shape[0] for b in dm.train_dataloader()) == 16
    assert dm.skipped_files == 2 and sorted(dm.train_set.bad_files) == sorted(bad)
    with pytest.warns(UserWarning, match="skipped 2 unreadable of 8") as record:
        dm.teardown("fit")
    assert len(record) == 1 and all(p.name in str(record[0].message) for p in bad)


def test_bad_file_replaced_deterministically(photo_dir):
    bad = _add_bad_files(photo_dir)
    paths = find_images(photo_dir)
    crops = TrainCrops(paths, P, len(paths))
    index = paths.index(bad[0])
    assert torch.equal(crops[index], crops[index])  # second call: the file is known bad, same answer


def test_only_bad_files_fails_clearly(tmp_path):
    (tmp_path / "a.png").write_text("nope")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff")
    dm = ImageDataModule(train_dir=str(tmp_path), patch_size=P, batch_size=2, num_workers=0)
    dm.setup("fit")
    with pytest.raises(ValueError, match="none left to train on"):
        next(iter(dm.train_dataloader()))


def test_eval_images_whole_named_and_bad_ones_dropped_at_setup(photo_dir):
    bad = _add_bad_files(photo_dir)
    dm = ImageDataModule(train_dir=str(photo_dir), val_dir=str(photo_dir), patch_size=P, num_workers=0)
    with pytest.warns(UserWarning, match="val_dir: skipped 2 unreadable"):
        dm.setup("validate")
    assert dm.skipped_files == 2 and not set(bad) & set(dm.val_set.paths)
    batches = list(dm.val_dataloader())
    assert len(batches) == 6
    names = [b["name"][0] for b in batches]
    assert "nested/palette.png" in names
    sizes = {b["name"][0]: tuple(b["image"].shape) for b in batches}
    assert sizes["rgb.png"] == (1, 3, 40, 48) and sizes["dot.png"] == (1, 3, 1, 1)


def test_max_val_images_takes_first_sorted(photo_dir):
    dm = ImageDataModule(train_dir=str(photo_dir), val_dir=str(photo_dir), max_val_images=2, num_workers=0)
    dm.setup("validate")
    assert dm.val_set.paths == find_images(photo_dir)[:2]


def test_predict_loader_is_test_images(photo_dir):
    dm = ImageDataModule(test_dir=str(photo_dir), num_workers=0)
    dm.setup("predict")
    assert len(dm.predict_dataloader()) == len(find_images(photo_dir))


def test_collate_eval_stacks_or_explains_size_mismatch():
    same = [{"image": torch.zeros(3, 4, 5), "name": n} for n in ("a", "b")]
    batch = collate_eval(same)
    assert batch["image"].shape == (2, 3, 4, 5) and batch["name"] == ["a", "b"]
    with pytest.raises(ValueError, match="val_batch_size"):
        collate_eval(same + [{"image": torch.zeros(3, 5, 4), "name": "c"}])


@pytest.mark.parametrize(
    "kwargs", [{"patch_size": 0}, {"batch_size": 0}, {"train_length": 0}, {"max_val_images": 0}, {"seed": -1}]
)
def test_constructor_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        ImageDataModule(**kwargs)


def test_no_warning_without_bad_files(photo_dir):
    dm = ImageDataModule(train_dir=str(photo_dir), patch_size=P, batch_size=2, num_workers=0)
    dm.setup("fit")
    list(dm.train_dataloader())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm.teardown("fit")
    assert dm.skipped_files == 0


def test_resumable_loader_reports_and_restores_its_position(photo_dir):
    dm = ImageDataModule(train_dir=str(photo_dir), patch_size=P, batch_size=2, num_workers=0, train_length=8)
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(3)
    full = list(loader)
    it = iter(loader)
    next(it), next(it)
    assert loader.state_dict() == {"epoch": 3, "batches": 2}
    restored = dm.train_dataloader()
    restored.load_state_dict(loader.state_dict())
    restored.sampler.set_epoch(3)
    rest = list(restored)
    assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(rest, full[2:]))
    assert restored.state_dict() == {"epoch": 3, "batches": 4}
    assert len(list(restored)) == 4  # the skip applies to one pass only
    restored.load_state_dict({"epoch": 3, "batches": 4})
    restored.sampler.set_epoch(4)  # the saved epoch had ended: the next one starts at its beginning
    assert len(list(restored)) == 4


class _BatchRecorder(L.LightningModule):
    """Records a checksum of every training batch by global step (no learning: lr 0)."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen = {}

    def training_step(self, batch, batch_idx):
        self.seen[self.global_step] = float(batch.double().sum())
        return self.layer(batch.mean().view(1, 1)).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_fit_resumed_mid_epoch_or_at_epoch_end_trains_on_the_same_batches(photo_dir, tmp_path):
    """Lightning alone replays an interrupted epoch from its start and, with workers, draws the first
    resumed epoch in epoch 0's order; the resumable loader continues exactly (3 steps per epoch)."""

    def fit(ckpt_path=None, save=False):
        dm = ImageDataModule(train_dir=str(photo_dir), patch_size=P, batch_size=2, num_workers=2, train_length=6)
        callbacks = [ModelCheckpoint(tmp_path / "ckpt", "{step}", every_n_train_steps=1, save_top_k=-1)] if save else []
        module = _BatchRecorder()
        L.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                  callbacks=callbacks, enable_checkpointing=save, default_root_dir=tmp_path,
                  ).fit(module, dm, ckpt_path=ckpt_path)
        return module.seen

    straight = fit(save=True)
    assert len(straight) == 9
    for step in (3, 4):  # the end of epoch 0, and mid-epoch 1
        resumed = fit(ckpt_path=tmp_path / "ckpt" / f"step={step}.ckpt")
        assert resumed == {s: straight[s] for s in range(step, 9)}
