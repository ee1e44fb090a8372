"""Model inputs: view modes and preprocessing, placeholder layout, the text tokenizer, prompts, the processor, grounding tags."""
