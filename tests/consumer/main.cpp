// A minimal downstream program: built against the installed package only.
#include <ddpm/ddpm.hpp>

#include <iostream>

int main() {
  std::cout << "ddpm " << ddpm::version() << "\n";
  std::cout << "ddpm consumer OK\n";
  return 0;
}
