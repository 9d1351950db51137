"""BriVL: two towers trained by cross-modal momentum contrast, the whole method in one module.

Per training step (``forward``), on each worker's local batch of B pairs:

1. query embeddings ``q_img = f_img(x)``, ``q_txt = f_txt(t)`` (with gradient);
2. EMA update of the momentum towers, ``theta_m <- m * theta_m + (1 - m) * theta`` (no grad);
3. momentum keys ``k_img = f_img_m(x)``, ``k_txt = f_txt_m(t)`` (no grad);
4. InfoNCE image->text: positive ``k_txt`` of the pair, negatives the text queue; and
   text->image symmetric; ``loss = loss_i2t + loss_t2i``, temperature ``T``;
5. keys all-gathered from every worker (rank order) and enqueued FIFO, each with its sample
   id and caption hash.

The frozen prefix of a tower (lower EfficientNet stages, lower text layers) is the same
network in the query and the momentum copy (its parameters are never EMA-updated), so it
runs once per step and both branches start from its output (or from cached outputs passed
in as ``image_trunk`` / ``text_trunk``).

False negatives: on a corpus not much larger than the queue, the queue holds older keys of
the very pair being contrasted, and of pairs with the same caption. Queue entries whose
sample id or caption hash equals the query's are masked out of the softmax.

The loss is the mean over this worker's samples; averaged over workers (as DDP averages
gradients) it is the loss of the global batch. Queue slots not yet written are masked out
of the softmax, so early steps never contrast against random vectors.

Temperature: BriVL's fixed ``config.temperature``, or (``learn_temperature``) a learnt
``log_temperature`` parameter as in CLIP/ALBEF, clamped into ``temperature_range`` before
every use and after every optimiser step (:meth:`BriVL.clamp_temperature`).

Gradient accumulation (the trainer's ``grad_accum_steps``) needs no gradient through the
keys, because every key comes from a momentum tower: a step over N micro-batches computes
their keys first (:meth:`BriVL.momentum_keys`), then each micro-batch's loss against the
keys of the whole accumulated batch (``batch_keys``) and the queue as it was at the step's
start, and enqueues the micro-batches' keys after the last one. That is the loss of one
batch of N x B, exactly (BatchNorm statistics aside, which stay per micro-batch).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from brivl.model.config import BriVLConfig
from brivl.model.distributed import all_gather_cat, rank_and_world
from brivl.model.tokenizer import TextTokenizer
from brivl.model.towers import ImageTower, TextTower


def info_nce(query: torch.Tensor, keys: torch.Tensor, queue: torch.Tensor, temperature: float,
             queue_valid: int | torch.Tensor, labels: torch.Tensor | None = None,
             exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of each query against [its key(s), queue] -> (mean loss, top-1 accuracy).

    query (B, D); keys (B, D) paired row by row, or (N, D) with ``labels`` (B,) giving each
    query's positive row (in-batch negatives); queue (K, D), only the first ``queue_valid``
    rows are real keys (the rest are masked out); ``exclude`` (B, K) True where a queue
    entry is a false negative of that query (masked out too).
    """
    if labels is None:
        pos = (query * keys).sum(dim=1, keepdim=True)  # (B, 1)
        labels = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    else:
        pos = query @ keys.t()  # (B, N)
    neg = query @ queue.t() / temperature  # (B, K); masked after the division, so a learnt
    #                                        temperature gets no inf * 0 = nan gradient
    empty = torch.arange(queue.shape[0], device=neg.device) >= queue_valid  # (K,) no host sync
    neg = neg.masked_fill(empty, float("-inf"))
    if exclude is not None:
        neg = neg.masked_fill(exclude, float("-inf"))
    logits = torch.cat([pos / temperature, neg], dim=1)  # (B, N + K)
    loss = F.cross_entropy(logits, labels)
    acc = (logits.argmax(dim=1) == labels).float().mean()
    return loss, acc


class BriVL(nn.Module):
    """Image and text towers, their momentum copies, and the two key queues."""

    def __init__(self, config: BriVLConfig, tokenizer: TextTokenizer, load_pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.image_tower = ImageTower(config.image, config.embed_dim, load_pretrained)
        self.text_tower = TextTower(config.text, config.embed_dim, load_pretrained)
        self.image_tower_m = copy.deepcopy(self.image_tower).requires_grad_(False)
        self.text_tower_m = copy.deepcopy(self.text_tower).requires_grad_(False)
        k, d = config.queue_size, config.embed_dim
        self.register_buffer("image_queue", torch.zeros(k, d))  # (K, D) momentum image keys
        self.register_buffer("text_queue", torch.zeros(k, d))  # (K, D) momentum text keys
        self.register_buffer("image_queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("text_queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))  # real keys held
        # (K,) sample id and caption hash of each queued key pair (-1: none)
        self.register_buffer("queue_sample_ids", torch.full((k,), -1, dtype=torch.long))
        self.register_buffer("queue_caption_ids", torch.full((k,), -1, dtype=torch.long))
        if config.learn_temperature:  # () log of the temperature, learnt
            self.log_temperature = nn.Parameter(torch.tensor(math.log(config.temperature)))

    # -- inference --------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """``{input_ids, attention_mask}``, LongTensor[B, L] each (L <= text.max_length)."""
        return self.tokenizer(texts)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Query image tower: pixels (B, 3, H, W) in [0, 1] -> (B, D), L2-normalised."""
        return self.image_tower(pixels)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Query text tower -> (B, D), L2-normalised."""
        return self.text_tower(input_ids, attention_mask)

    def temperature(self) -> float | torch.Tensor:
        """The InfoNCE temperature: the fixed config value, or the learnt one (a 0-d tensor,
        clamped into ``temperature_range`` first)."""
        if not self.config.learn_temperature:
            return self.config.temperature
        self.clamp_temperature()
        return self.log_temperature.exp()

    @torch.no_grad()
    def clamp_temperature(self) -> None:
        """Clamp a learnt temperature into ``temperature_range`` (in place; CLIP/ALBEF style)."""
        if self.config.learn_temperature:
            low, high = self.config.temperature_range
            self.log_temperature.clamp_(math.log(low), math.log(high))

    def queue_fill(self) -> float:
        """Fraction of the queue holding real keys."""
        return int(self.queue_filled) / self.config.queue_size

    # -- momentum bookkeeping -----------------------------------------------------------------
    def _momentum_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        q_params, k_params = [], []
        for tower, tower_m in ((self.image_tower, self.image_tower_m), (self.text_tower, self.text_tower_m)):
            for p, p_m in zip(tower.parameters(), tower_m.parameters(), strict=True):
                if p.requires_grad:  # frozen parameters stay equal copies: skip them
                    q_params.append(p.detach())
                    k_params.append(p_m)
        return q_params, k_params

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """``theta_m <- momentum * theta_m + (1 - momentum) * theta`` for every trainable parameter.

        One fused in-place pass (``lerp``: no temporaries); ``momentum=1`` leaves the momentum
        towers bit-identical, ``momentum=0`` copies the query towers bit-exactly.
        """
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum={momentum!r}; accepted: 0 <= momentum <= 1")
        q_params, k_params = self._momentum_pairs()
        if q_params:
            torch._foreach_lerp_(k_params, q_params, 1.0 - momentum)

    def check_global_batch(self, local_batch: int) -> int:
        """The global batch; raises if the queue size is not a multiple of it."""
        _, world = rank_and_world()
        global_batch = local_batch * world
        k = self.config.queue_size
        if k % global_batch:
            lower = max(global_batch, k // global_batch * global_batch)
            raise ValueError(
                f"queue_size={k} is not divisible by the global batch {global_batch} "
                f"({local_batch} per worker x {world} workers); accepted: a multiple of the "
                f"global batch, e.g. {lower} or {lower + global_batch}"
            )
        return global_batch

    @torch.no_grad()
    def enqueue(self, image_keys: torch.Tensor, text_keys: torch.Tensor,
                sample_ids: torch.Tensor | None = None, caption_ids: torch.Tensor | None = None) -> None:
        """All-gather the keys (and their ids) of every worker and write them FIFO."""
        local = image_keys.shape[0]
        self.check_global_batch(local)
        image_keys = all_gather_cat(image_keys)  # (B_global, D)
        text_keys = all_gather_cat(text_keys)  # (B_global, D)
        n, k = image_keys.shape[0], self.config.queue_size
        start = int(self.image_queue_ptr)
        for buffer, ids in ((self.queue_sample_ids, sample_ids), (self.queue_caption_ids, caption_ids)):
            if ids is None:
                ids = torch.full((local,), -1, dtype=torch.long)
            buffer[start:start + n] = all_gather_cat(ids.to(buffer.device))  # (B_global,)
        for queue, ptr, keys in ((self.image_queue, self.image_queue_ptr, image_keys),
                                 (self.text_queue, self.text_queue_ptr, text_keys)):
            queue[start:start + n] = keys
            ptr.fill_((start + n) % k)
        self.queue_filled.fill_(min(k, int(self.queue_filled) + n))

    def false_negatives(self, sample_ids: torch.Tensor | None,
                        caption_ids: torch.Tensor | None) -> torch.Tensor | None:
        """(B, K) True where a queued key is of the same sample or caption as the query."""
        masks = [buffer.unsqueeze(0) == ids.unsqueeze(1)
                 for buffer, ids in ((self.queue_sample_ids, sample_ids),
                                     (self.queue_caption_ids, caption_ids))
                 if ids is not None]
        if not masks:
            return None
        hit = masks[0] if len(masks) == 1 else masks[0] | masks[1]  # (B, K)
        return hit & (self.queue_sample_ids >= 0).unsqueeze(0)

    # -- training step ------------------------------------------------------------------------
    def trunks(self, pixels: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Outputs of both towers' frozen prefixes (no gradient): (image trunk, text trunk)."""
        with torch.no_grad():
            return (self.image_tower.trunk(pixels),
                    self.text_tower.trunk(input_ids, attention_mask))

    @torch.no_grad()
    def momentum_keys(self, pixels: torch.Tensor | None, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor, image_trunk: torch.Tensor | None = None,
                      text_trunk: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The momentum towers' keys of a local batch, (B, D) each (no EMA update)."""
        if image_trunk is None:
            image_trunk, text_trunk = self.trunks(pixels, input_ids, attention_mask)
        return (self.image_tower_m.from_trunk(image_trunk),
                self.text_tower_m.from_trunk(text_trunk, input_ids, attention_mask))

    def forward(self, pixels: torch.Tensor | None, input_ids: torch.Tensor,
                attention_mask: torch.Tensor, momentum: float | None = 0.99, enqueue: bool = True,
                *, sample_ids: torch.Tensor | None = None, caption_ids: torch.Tensor | None = None,
                image_trunk: torch.Tensor | None = None, text_trunk: torch.Tensor | None = None,
                batch_keys: tuple[torch.Tensor, torch.Tensor, int] | None = None,
                ) -> dict[str, torch.Tensor]:
        """One contrastive step on a local batch.

        ``momentum=None`` skips the EMA update and ``enqueue=False`` leaves the queues alone
        (validation loss). ``sample_ids`` / ``caption_ids`` (B,) int64 >= 0 mask false
        negatives in the queue; ``image_trunk`` / ``text_trunk`` are cached outputs of
        :meth:`trunks` (then ``pixels`` may be None). ``batch_keys = (image keys, text keys,
        offset)`` are the in-batch keys of a whole accumulated global batch (N, D) and this
        micro-batch's first row in them (in-batch negatives only; the keys are not
        recomputed then, so call with ``momentum=None``). Returns ``loss`` (= loss_i2t +
        loss_t2i), ``loss_i2t``, ``loss_t2i``, ``acc_i2t``, ``acc_t2i``, the query
        embeddings ``image_embed`` / ``text_embed`` and the momentum keys ``image_key`` /
        ``text_key``.
        """
        batch = input_ids.shape[0]
        if enqueue:
            self.check_global_batch(batch)  # fail before any compute
        if image_trunk is None:
            image_trunk, text_trunk = self.trunks(pixels, input_ids, attention_mask)
        q_img = self.image_tower.from_trunk(image_trunk)  # (B, D)
        q_txt = self.text_tower.from_trunk(text_trunk, input_ids, attention_mask)  # (B, D)
        if momentum is not None:
            self.momentum_update(momentum)
        if batch_keys is None:
            k_img, k_txt = self.momentum_keys(None, input_ids, attention_mask, image_trunk,
                                              text_trunk)  # (B, D) each
        else:
            offset = batch_keys[2]
            k_img, k_txt = (k[offset:offset + batch] for k in batch_keys[:2])
        valid = self.queue_filled  # real keys in the queues (0-d tensor)
        exclude = self.false_negatives(sample_ids, caption_ids)  # (B, K) or None
        t = self.temperature()
        image_queue, text_queue = self.image_queue, self.text_queue
        if enqueue and torch.is_grad_enabled():  # backward needs the queues as they are now
            image_queue, text_queue = image_queue.clone(), text_queue.clone()
        if self.config.in_batch_negatives:
            if batch_keys is None:
                rank, _ = rank_and_world()
                offset = rank * batch
                all_k_img, all_k_txt = all_gather_cat(k_img), all_gather_cat(k_txt)  # (B_global, D)
            else:
                all_k_img, all_k_txt = batch_keys[0], batch_keys[1]  # (N_global, D)
            labels = torch.arange(batch, device=q_img.device) + offset
            loss_i2t, acc_i2t = info_nce(q_img, all_k_txt, text_queue, t, valid, labels, exclude)
            loss_t2i, acc_t2i = info_nce(q_txt, all_k_img, image_queue, t, valid, labels, exclude)
        else:
            loss_i2t, acc_i2t = info_nce(q_img, k_txt, text_queue, t, valid, exclude=exclude)
            loss_t2i, acc_t2i = info_nce(q_txt, k_img, image_queue, t, valid, exclude=exclude)
        if enqueue:
            self.enqueue(k_img, k_txt, sample_ids, caption_ids)
        return {
            "loss": loss_i2t + loss_t2i,
            "loss_i2t": loss_i2t,
            "loss_t2i": loss_t2i,
            "acc_i2t": acc_i2t,
            "acc_t2i": acc_t2i,
            "image_embed": q_img,
            "text_embed": q_txt,
            "image_key": k_img,
            "text_key": k_txt,
        }

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser should update (query towers, unfrozen part)."""
        return [p for p in self.parameters() if p.requires_grad]
