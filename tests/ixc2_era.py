"""The IXC2-era chat wrapping (internlm-xcomposer2-vl-7b and -4khd-7b), for the oracle tests.

The oracle folder (../shared/reference/internlm-xcomposer2) is IXC-2.5's remote code, whose
``interleav_wrap_chat`` gives BOS to the first part only and auto-places a lone picture. The
IXC2-era files tokenise every non-empty part between pictures with ``tokenizer(part)`` — BOS each —
and put the default meta instruction first. Reconstructed from the VL's published
modeling_internlm_xcomposer2.py as copied at github.com/OpenGVLab/LAMM commit
15eb22d4edd3fcc03bc83346476d25e6e7f5f940 (src/ChEF/models/internlm/); the 4KHD's chat() (its
evaluation script's copy) calls the same ``interleav_wrap_chat(tokenizer, query, image, history,
meta_instruction)`` with the same default meta instruction.
"""

import torch

META = (  # the VL's chat() default meta_instruction
    'You are an AI assistant whose name is InternLM-XComposer (浦语·灵笔).\n'
    '- InternLM-XComposer (浦语·灵笔) is a multi-modality conversational language model that is developed by '
    'Shanghai AI Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n'
    '- InternLM-XComposer (浦语·灵笔) can understand and communicate fluently in the language chosen by the user '
    'such as English and 中文.\n'
    '- InternLM-XComposer (浦语·灵笔) is capable of comprehending and articulating responses effectively based on '
    'the provided image.')


def interleav_wrap_chat(self, tokenizer, query, image, history, meta_instruction):
    prompt = ''
    if meta_instruction:
        prompt += f"""[UNUSED_TOKEN_146]system\n{meta_instruction}[UNUSED_TOKEN_145]\n"""
    for record in history:
        prompt += (f"""[UNUSED_TOKEN_146]user\n{record[0]}[UNUSED_TOKEN_145]\n"""
                   f"""[UNUSED_TOKEN_146]assistant\n{record[1]}[UNUSED_TOKEN_145]\n""")
    prompt += f"""[UNUSED_TOKEN_146]user\n{query}[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n"""
    im_len = image.shape[1]
    image_nums = len(image)
    parts = prompt.split('<ImageHere>')
    wrap_embeds, wrap_im_mask = [], []
    temp_len = 0
    for idx, part in enumerate(parts):
        if len(part) > 0:
            part_tokens = tokenizer(part, return_tensors='pt').to(self.device)
            part_embeds = self.model.tok_embeddings(part_tokens.input_ids)
            wrap_embeds.append(part_embeds)
            wrap_im_mask.append(torch.zeros(part_embeds.shape[:2]))
            temp_len += part_embeds.shape[1]
        if idx < image_nums:
            wrap_embeds.append(image[idx].unsqueeze(0))
            wrap_im_mask.append(torch.ones(1, image[idx].shape[0]))
            temp_len += im_len
        if temp_len > self.max_length:
            break
    wrap_embeds = torch.cat(wrap_embeds, dim=1)[:, :self.max_length]
    wrap_im_mask = torch.cat(wrap_im_mask, dim=1)[:, :self.max_length].bool()
    return {'inputs_embeds': wrap_embeds}, wrap_im_mask
