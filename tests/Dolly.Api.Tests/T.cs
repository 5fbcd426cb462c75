namespace Dolly.Api.Tests; public sealed class T { [Fact] public void A() { } }
