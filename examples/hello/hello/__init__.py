"""The hello example: a frontend that asks a greeter, which runs in two versions."""
