"""From what a caller gives (a prompt string, chat messages, a plain question) to token ids with
image and video slots, in the model's own chat template and placeholders."""

from __future__ import annotations

from .errors import PromptError
from .manifest import Manifest
from .prompt import (PreparedPrompt, check_text, close_spans, expand_media_slots, prefix_image_placeholders,
                     render_messages, user_turn)
from .tokenizer import TextTokenizer


class Prompter:
    def __init__(self, manifest: Manifest, tokenizer: TextTokenizer):
        self.manifest = manifest
        self.tokenizer = tokenizer
        image = manifest.image
        # what message text may not hold: it would make (or break) an image slot
        self.marks = (image.image_token, image.placeholder, image.video_token, *(image.span or ()))

    def _render(self, messages) -> tuple[str, int, int]:
        return render_messages(self.tokenizer, messages, self.marks, self.manifest.image.video_token is not None)

    def close_spans(self, text: str) -> str:
        """Spans (Qwen-VL's ``<img>path</img>``) → the bare placeholder, their content dropped unread."""
        image = self.manifest.image
        return close_spans(text, image.span, image.placeholder or image.image_token) if image.span else text

    def slot_text(self) -> str:
        """What stands in the text for one image's slots before tokenising: the image token, inside
        the span's marks where the model has one."""
        image = self.manifest.image
        return f"{image.span[0]}{image.image_token}{image.span[1]}" if image.span else image.image_token

    def prompt_text(self, prompt: str | None, messages, num_images: int, num_videos: int = 0) -> str:
        """The prompt string: given, or rendered from chat messages with the model's template."""
        limit = self.manifest.image.max_images
        if limit and num_images > limit:
            raise PromptError(f"this model takes at most {limit} image(s) per prompt (a chat counts all its turns), "
                              f"and {num_images} were given; ask about one picture at a time, starting a new chat "
                              "for the next")
        if (prompt is None) == (messages is None):
            raise PromptError("pass exactly one of prompt= (a string) or messages= (a chat)")
        if messages is None:
            return check_text(prompt, "prompt")
        text, num_items, num_clips = self._render(messages)
        if num_items != num_images:
            raise PromptError(f"the messages hold {num_items} image item(s) but {num_images} image(s) were given")
        if num_clips != num_videos:
            raise PromptError(f"the messages hold {num_clips} video item(s) but {num_videos} video(s) were given")
        return text

    def turn_prompt(self, text: str, num_images: int, system: str | None = None, num_videos: int = 0) -> str:
        """A plain question (the CLI's --prompt) → the prompt string of one user turn in the model's
        chat template, images first unless ``text`` places them with placeholders."""
        image = self.manifest.image
        marks = (image.image_token, image.placeholder)
        text = self.close_spans(check_text(text, "prompt"))
        if system is not None:
            check_text(system, "system")
        if not self.manifest.tokenizer.chat_template:
            if system:
                raise PromptError("this model has no chat template, so a system turn has nowhere to go; "
                                  "leave out --system, or write the whole prompt yourself with --raw")
            has_mark = any(m and m in text for m in marks)
            lead = image.placeholder or image.image_token
            return text if has_mark or image.placement != "inline" else lead * num_images + text
        messages = user_turn(text, num_images, marks, system, num_videos)
        rendered = self._render(messages)[0]
        if system and rendered == self._render(messages[1:])[0]:
            raise PromptError("this model's chat template has no system turn (it renders the same without it); "
                              "leave out --system")
        return rendered

    def expand_video_frames(self, text: str, timestamps: list[list[float]]) -> str:
        """Each video placeholder → one ``video_frame_template`` per temporal patch, with its
        timestamp (``Qwen3VLProcessor.replace_video_token``)."""
        image = self.manifest.image
        pieces = text.split(image.video_token)
        if len(pieces) - 1 != len(timestamps):
            raise PromptError(f"the prompt has {len(pieces) - 1} video placeholder(s) but {len(timestamps)} video(s) "
                              f"were given; put one {image.video_token} per video")

        def frames(stamps: list[float]) -> str:
            template = image.video_frame_template
            return "".join(template.replace("{seconds}", f"{s:.1f}").replace("{video}", image.video_token) for s in stamps)

        return pieces[0] + "".join(frames(stamps) + rest for stamps, rest in zip(timestamps, pieces[1:]))

    def prepare_prompt(self, prompt: str | None, messages, num_images: int, tokens_per_image: list[int],
                       tokens_per_video: list[int] = ()) -> PreparedPrompt:
        image = self.manifest.image
        prompt = self.close_spans(self.prompt_text(prompt, messages, num_images, len(tokens_per_video)))
        if image.placeholder:
            prompt = prompt.replace(image.placeholder, self.slot_text())
        elif image.span:
            prompt = prompt.replace(image.image_token, self.slot_text())
        ids = self.tokenizer.encode(prompt + self.manifest.prompt_suffix)
        if image.placement == "memory":  # images are cross-attention memory, not prompt tokens
            return PreparedPrompt(ids, [])
        if image.placement == "prefix":
            ids = prefix_image_placeholders(ids, image.image_token_id, num_images)
        counts, names = {image.image_token_id: list(tokens_per_image)}, {image.image_token_id: "image"}
        if image.video_token_id is not None:
            counts[image.video_token_id], names[image.video_token_id] = list(tokens_per_video), "video"
        return expand_media_slots(ids, counts, names)
