"""BLIP-2's connector: learned queries read the image through the Q-Former, then a linear
projection maps them to the LLM width. InstructBLIP's Q-Former also reads the instruction."""

from __future__ import annotations

import torch
from torch import nn


class QFormerConnector(nn.Module):
    """image_features (n, patches, d_vision) → image_embeds (n, num_query_tokens, d_llm)."""

    def __init__(self, query_tokens: nn.Parameter, qformer: nn.Module, language_projection: nn.Module):
        super().__init__()
        self.query_tokens = query_tokens
        self.qformer = qformer
        self.language_projection = language_projection

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        queries = self.query_tokens.expand(image_features.shape[0], -1, -1)
        image_mask = torch.ones(image_features.shape[:-1], dtype=torch.long, device=image_features.device)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=image_features,
                           encoder_attention_mask=image_mask, return_dict=True)
        return self.language_projection(out.last_hidden_state)


class InstructQFormerConnector(QFormerConnector):
    """+ qformer_input_ids / qformer_attention_mask (n, text): the instruction, in the Q-Former's vocabulary."""

    def forward(self, image_features, qformer_input_ids, qformer_attention_mask):
        queries = self.query_tokens.expand(image_features.shape[0], -1, -1)
        query_mask = torch.ones(queries.shape[:-1], dtype=torch.long, device=image_features.device)
        image_mask = torch.ones(image_features.shape[:-1], dtype=torch.long, device=image_features.device)
        out = self.qformer(
            input_ids=qformer_input_ids,
            attention_mask=torch.cat([query_mask, qformer_attention_mask], dim=1),
            query_embeds=queries,
            encoder_hidden_states=image_features,
            encoder_attention_mask=image_mask,
            return_dict=True,
        )
        # the Q-Former's output holds the queries first, then the instruction tokens: keep the queries
        return self.language_projection(out.last_hidden_state[:, : queries.shape[1]])
